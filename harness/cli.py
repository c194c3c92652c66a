"""The ``bench`` command: argument parsing and printing only; the work is in the modules it calls."""
from __future__ import annotations

import argparse
import shlex
import dataclasses
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from harness.schema.settings import comma_list

if TYPE_CHECKING:
    from harness.plan import Grid

# Exceptions that mean bad input (module -> class names): printed as one line, never as a traceback
_USER_ERRORS = {
    "harness.errors": ("ConfigError",), "harness.models": ("ModelError",), "harness.safe_io": ("OutputError",),
    "methods.base": ("MethodConfigError",), "methods.registry": ("UnknownMethod",),
    "reports.load": ("ReportError",), "tasks.evaluation": ("ProtocolError",), "tasks.base": ("UnknownTask",),
    "tasks.sources": ("DataError",),
}


def _is_user_error(err: BaseException) -> bool:
    """Whether ``err`` is bad input. Only modules already imported are looked in (an exception's
    class was imported to raise it), so a typo never waits for torch to import."""
    return any(isinstance(err, getattr(sys.modules[module], name))
               for module, names in _USER_ERRORS.items() if module in sys.modules for name in names)


def _add_common(p: argparse.ArgumentParser) -> None:
    from harness.config import EvalConfig

    p.add_argument("--model", default="smollm2-135m",
                   help="built-in name (smollm2-135m, tiny-llama, smollm2-shapes), hub id or local folder "
                        "(default: smollm2-135m, embedded, works offline)")
    p.add_argument("--tasks", default=None,
                   help="comma-separated task names or suites (commonsense, math), e.g. arc_e,boolq; also "
                        "path/to/task.yaml (your own task file), file:PATH (an LLM-Adapters-format .json or "
                        "folder) and lm-eval:NAME (an lm-eval task, evaluated by lm-eval whatever --eval-backend "
                        "says)")
    p.add_argument("--eval-limit", type=int, default=None,
                   help=f"test items per task (0 = all; default {EvalConfig.eval_limit})")
    p.add_argument("--num-fewshot", type=int, default=None, metavar="K",
                   help="few-shot examples per item, as lm-eval's --num_fewshot: drawn from the task's train split "
                        "(seed 1234); default: zero-shot (an lm-eval:NAME task: its own default)")
    p.add_argument("--apply-chat-template", action="store_true",
                   help="prompts through the tokenizer's chat template (one user message), as lm-eval's "
                        "--apply_chat_template")
    p.add_argument("--protocol", choices=["auto", "likelihood", "generate"], default="auto",
                   help="likelihood: multiple choice by log-likelihood (acc, acc_norm); generate: LLM-Adapters "
                        "prompt, greedy decoding (--set num_beams=4 for their beam search), answer extraction. "
                        "auto (default): likelihood when every task has choices, else generate (math)")
    p.add_argument("--eval-backend", choices=["native", "lm-eval"], default="native",
                   help="native (default): our batched scorer/generator; lm-eval: lm-evaluation-harness's HFLM on "
                        "the same in-memory model, our tasks exported as lm-eval YAML")
    p.add_argument("--out", type=Path, default=Path("results"), help="results folder (default: results/)")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="offline data folder (default: $PEFT_BENCH_DATA, else ../shared/data beside the project)")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1 ...")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def _add_baseline(p: argparse.ArgumentParser) -> None:
    p.add_argument("--baseline", default=None, metavar="NAME",
                   help="reference method of the end-of-run comparison block (default: the first method listed)")


def _add_executor(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("executor", "where runs execute; results land in --out wherever they ran")
    g.add_argument("--executor", choices=["local", "inline", "ray", "slurm"], default="local",
                   help="local (default): a fresh worker process per run, one at a time; inline: this process; "
                        "ray: a Ray task per run (pip install 'peft-bench[ray]'); slurm: a Slurm job array via "
                        "submitit (pip install 'peft-bench[slurm]')")
    g.add_argument("--cpus-per-run", type=int, default=1, help="ray/slurm: CPUs per run (default %(default)s)")
    g.add_argument("--ray-address", default=None,
                   help="ray: cluster to join, e.g. ray://head:10001 or auto (default: $RAY_ADDRESS, else a local "
                        "Ray instance); a run asks for one GPU when the device is CUDA")
    g.add_argument("--slurm-partition", default=None, help="slurm: partition")
    g.add_argument("--slurm-time", type=int, default=60, metavar="MIN", help="slurm: time limit per run (default %(default)s)")
    g.add_argument("--slurm-gpus", type=int, default=0, help="slurm: GPUs per run (default %(default)s)")
    g.add_argument("--slurm-mem", type=float, default=None, metavar="GB", help="slurm: memory per run")
    g.add_argument("--slurm-cluster", choices=["slurm", "local", "debug"], default=None,
                   help="slurm: submitit backend (default: slurm where sbatch exists, else local processes)")


def _add_ranks(p: argparse.ArgumentParser, trains: bool = False) -> None:
    """One run on several processes (harness.distributed; README "One run on several GPUs");
    ``trains``: the command trains (``--shard``)."""
    from harness.distributed.launch import BACKENDS, DEFAULT_TIMEOUT_S

    g = p.add_argument_group("processes", "one run on several processes, GPUs or machines (torch.distributed.run)")
    g.add_argument("--nproc", type=int, default=1,
                   help="processes per machine for each run: one per GPU on CUDA, at most one per core on CPU; the "
                        "global batch is shared (default 1)")
    g.add_argument("--nnodes", type=int, default=1, help="machines per run; needs --rdzv-endpoint (default 1)")
    g.add_argument("--rdzv-endpoint", default=None, metavar="HOST:PORT",
                   help="rendezvous of the run's machines (default: 127.0.0.1 and a free port, one machine)")
    g.add_argument("--dist-backend", choices=BACKENDS, default="auto", help="auto (default): nccl on CUDA, gloo on CPU")
    g.add_argument("--dist-timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="S",
                   help="a training collective waiting longer fails the run (a hung rank); default %(default)s")
    if trains:
        g.add_argument("--shard", action="store_true",
                       help="full fine-tuning and LoRA under FSDP2 (fully_shard), for models that do not fit one "
                            "device; needs --nproc/--nnodes above 1")


def _ranks(args: argparse.Namespace) -> Any:
    """The ``--nproc`` settings, checked against this machine before anything runs."""
    from harness.distributed.launch import Ranks, check, check_shard

    from harness.config import ConfigError

    ranks = Ranks(args.nproc, args.nnodes, args.rdzv_endpoint, args.dist_backend, args.dist_timeout,
                  getattr(args, "shard", False))
    check(ranks, args.device, here=getattr(args, "executor", "local") in ("local", "inline"))
    check_shard(ranks, [])  # the methods: once the runs are planned (cmd_run, cmd_sweep)
    if ranks.several and getattr(args, "sequence", None):  # the other ranks cannot resume a sequence yet
        raise ConfigError("--sequence runs on one process; drop --nproc/--nnodes")
    return ranks


def _add_outputs(p: argparse.ArgumentParser) -> None:
    """What each run keeps and reports, besides its records (bench run and bench sweep)."""
    from harness.export import DEFAULT_SAVE, SAVE_KINDS

    p.add_argument("--save", choices=SAVE_KINDS, default=DEFAULT_SAVE,
                   help="keep the trained model in runs/<id>/: adapter (default: peft's folder, or the changed "
                        "weights as safetensors), merged (a plain transformers folder), none (big sweeps)")
    p.add_argument("--report-to", default="none", metavar="TRACKERS",
                   help="tensorboard, wandb, mlflow (comma-separated), as HF Trainer's report_to; default none")


def _executor_setup(args: argparse.Namespace) -> tuple[Any, Any]:
    """The executor options and the submission's shared settings from the parsed arguments."""
    from harness.environment import pick_device
    from harness.executors import get, job_for
    from harness.executors.base import ExecutorOptions
    from harness.config import ConfigError
    from harness.safe_io import check_out

    get(args.executor)  # a missing optional package is reported now, before anything runs
    if args.executor == "ray" and args.nnodes > 1:
        raise ConfigError("--executor ray runs each run on one node: --nnodes 1 (or --executor slurm)")
    if args.executor in ("local", "inline"):
        pick_device(args.device)  # an unavailable device too (a cluster node may have one)
    check_out(args.out)
    options = ExecutorOptions(cpus_per_run=args.cpus_per_run, ray_address=args.ray_address,
                              slurm_cluster=args.slurm_cluster, slurm_partition=args.slurm_partition,
                              slurm_time_min=args.slurm_time, slurm_gpus=args.slurm_gpus, slurm_mem_gb=args.slurm_mem)
    from harness.trackers import parse_report_to

    return options, job_for(args.out, args.device, not args.no_progress, args.command_line,
                            getattr(args, "force", False), args.save, parse_report_to(args.report_to, args.out),
                            _ranks(args))


def _version() -> str:
    from importlib.metadata import version

    return version("peft-bench")


def build_parser() -> argparse.ArgumentParser:
    from harness.config import TrainConfig
    from harness.perf.settings import PerfConfig

    parser = argparse.ArgumentParser(prog="bench", description="Benchmark parameter-efficient fine-tuning methods.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="train and evaluate methods on tasks",
                         description="Train every method on the tasks (one run per method and seed; "
                                     "with several tasks, one model on their mixture unless --per-task), "
                                     "evaluate before and after, and write run folders plus the tidy table.")
    run.add_argument("--methods", required=True, help="comma-separated method names (see `bench list methods`)")
    _add_common(run)
    run.add_argument("--seeds", default="0", help="comma-separated seeds (default: 0)")
    budget = run.add_mutually_exclusive_group()
    budget.add_argument("--max-steps", type=int, default=None,
                        help=f"optimizer steps per run (default {TrainConfig.max_steps})")
    budget.add_argument("--epochs", type=float, default=None, help="epochs over the training split instead of steps")
    run.add_argument("--per-task", action="store_true", help="train one model per task instead of one on the mixture")
    run.add_argument("--sequence", default=None, metavar="T1,T2,...",
                     help="continued training: train on these tasks in order with one model per method, evaluating "
                          "every sequence task after every stage (accuracy matrix, BWT, forgetting); replaces --tasks")
    run.add_argument("--retention", default=None, metavar="TASKS",
                     help="tasks also evaluated before and after training, to measure forgetting: none (default: only "
                          "the trained tasks are evaluated), auto (the other tasks of the trained tasks' suites), or a "
                          "comma-separated list")
    run.add_argument("--retention-text", type=Path, default=None, metavar="PATH",
                     help="held-out text file: also report the change of LM loss on it (forgetting without labels)")
    run.add_argument("--preset", default=None, help="hyperparameter preset of every method, e.g. paper (published GPU settings)")
    run.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                     help="override a trainer key (lr=3e-4, batch_size=4) or a method key (lora.r=16); repeatable")
    _add_outputs(run)
    _add_executor(run)
    _add_ranks(run, trains=True)
    run.add_argument("--force", action="store_true", help="rerun runs that already finished")
    _add_baseline(run)
    run.set_defaults(func=cmd_run)

    sweep = sub.add_parser("sweep", help="run a grid described in a sweep file (YAML or TOML), on any executor",
                           description="Expand a sweep file (models x methods with override ranges x tasks x "
                                       "seeds) into the runs of the equivalent bench run commands and run the ones "
                                       "not done yet; with select, tune a key (e.g. lr) per method on held-out "
                                       "training items first. See examples/sweep.yaml.")
    sweep.add_argument("file", type=Path, help="sweep file (.yaml/.yml, or .toml)")
    sweep.add_argument("--dry-run", action="store_true", help="list the runs and their status; run nothing")
    sweep.add_argument("--retry-failed", action="store_true",
                       help="rerun failed runs too (default: skip ok and failed runs; run new and interrupted ones)")
    sweep.add_argument("--tune", default=None, metavar="KEY",
                       help="tune KEY (e.g. lr; its values are the sweep's list) by validation accuracy on held-out "
                            "training items, as the file's select: {over: KEY}")
    sweep.add_argument("--out", type=Path, default=Path("results"), help="results folder (default: results/)")
    sweep.add_argument("--data-dir", type=Path, default=None, help="offline data folder")
    sweep.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda ...")
    sweep.add_argument("--no-progress", action="store_true", help="hide progress bars")
    _add_outputs(sweep)
    _add_executor(sweep)
    _add_ranks(sweep, trains=True)
    _add_baseline(sweep)
    sweep.set_defaults(func=cmd_sweep)

    ev = sub.add_parser("eval", help="evaluate a model (and an adapter) without training")
    _add_common(ev)
    ev.add_argument("--adapter", default=None, metavar="DIR",
                    help="apply this adapter to --model first: a peft adapter folder, or one saved by bench run "
                         "(runs/<id>/adapter). --model DIR alone, DIR an adapter folder, takes its base from "
                         "adapter_config.json, as lm-eval's peft=")
    ev.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="evaluation key: eval_batch_size, num_beams, max_new_tokens (0 = task's), eval_limit")
    _add_ranks(ev)
    ev.set_defaults(func=cmd_eval)

    cmp = sub.add_parser("compare", help="paired comparison of two methods on the same test items",
                         description="Per task: accuracy of each method (mean, std and 95% t-interval across "
                                     "seeds), the paired difference B - A with a paired-bootstrap 95% interval, "
                                     "and McNemar's exact p-value on the items both methods answered.")
    cmp.add_argument("results", type=Path, help="results folder (with runs/)")
    cmp.add_argument("--methods", required=True, metavar="A,B", help="the two methods (their labels in reports)")
    cmp.add_argument("--task", default=None, help="only this task")
    cmp.add_argument("--phase", default=None, help="phase to compare (default: after, or the last stage)")
    cmp.add_argument("--metric", choices=["acc", "acc_norm"], default="acc")
    cmp.set_defaults(func=cmd_compare)

    perf = sub.add_parser("perf", help="time training steps against the frozen floor (interleaved, one process)",
                          description="Time each method's training step and the frozen floor (forward + input-"
                                      "gradient backward, no weight gradients) round by round in one process; "
                                      "print median step time, ratios to the floor and to LoRA, memory figures.")
    perf.add_argument("--methods", default=None, help="comma-separated methods (default: lora,losia-pro, or the baseline's)")
    perf.add_argument("--shape", choices=["tiny", "smollm2"], default=None,
                      help="model shapes, random weights (default: smollm2 = SmolLM2-135M: 30 layers, hidden 576)")
    perf.add_argument("--batch-size", type=int, default=None, help=f"default {PerfConfig.batch_size}")
    perf.add_argument("--seq-len", type=int, default=None, help=f"default {PerfConfig.seq_len}")
    perf.add_argument("--rounds", type=int, default=None, help=f"interleaved rounds (default {PerfConfig.rounds})")
    perf.add_argument("--steps-per-round", type=int, default=None, help=f"default {PerfConfig.steps_per_round}")
    perf.add_argument("--warmup", type=int, default=None,
                      help=f"untimed steps per method before the rounds (default {PerfConfig.warmup_steps})")
    perf.add_argument("--start-step", type=int, default=None,
                      help="step index the steps start from, so step-dependent schedules are timed at that point "
                           "of a run (e.g. with losia-pro.sync=true and a start past the first period, no layer "
                           "is in its profiling window); default 0")
    perf.add_argument("--set", dest="sets", action="append", default=None, metavar="KEY=VALUE",
                      help="method or trainer override, as for bench run (e.g. lora.r=32, losia-pro.period=10)")
    perf.add_argument("--device", default="auto")
    _add_ranks(perf)
    perf.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    perf.add_argument("--check", type=Path, default=None, metavar="BASELINE.json",
                      help="compare with a baseline; exit 1 when a method regresses beyond tolerance")
    perf.add_argument("--update", action="store_true",
                      help="with --check: record this machine's entry in the baseline (added or replaced)")
    perf.add_argument("--threads", type=int, default=None, help="intra-op CPU threads (default: torch's, or the baseline's)")
    perf.add_argument("--clock", choices=["wall", "cpu"], default=None,
                      help="wall time (default) or this thread's CPU time (needs --threads 1; the gate's clock: "
                           "load on a shared machine cannot stretch it)")
    perf.add_argument("--repeat", type=int, default=0, metavar="N",
                      help="with --check: run N checks back to back and report how many failed (false-alarm rate); "
                           "with --update: record the baseline from N measurements, their rounds pooled")
    perf.add_argument("--inject-slowdown", default=None, metavar="METHOD=FACTOR",
                      help="TEST AID for the gate: stretch each timed step of METHOD to FACTOR x its time (by "
                           "busy-waiting inside the timed region); with --repeat, reports the detection rate")
    perf.add_argument("--profile", type=int, default=0, metavar="STEPS",
                      help="after the timed rounds, profile STEPS more steps of each method (untimed) and "
                           "print the ops that add most time over the floor")
    perf.add_argument("--no-progress", action="store_true")
    perf.set_defaults(func=cmd_perf)

    synth = sub.add_parser("synth", help="Localized LoRA's synthetic experiment: fitted vs best error per structure",
                           description="Fit target matrices (block-structured, globally low-rank, decaying spectrum) "
                                       "with global LoRA, fully localized and diagonal-local adapters at matched "
                                       "budgets; report reached and closed-form best errors as a table and a plot.")
    synth.add_argument("--out", type=Path, default=Path("results/synth"), help="output folder (default results/synth)")
    synth.add_argument("--size", type=int, default=256, help="target matrix size (default %(default)s)")
    synth.add_argument("--blocks", type=int, default=4, help="K, blocks per side (default %(default)s)")
    synth.add_argument("--ranks", default="4,8,16,32", help="LoRA-equivalent budgets r (default %(default)s)")
    synth.add_argument("--steps", type=int, default=300, help="Adam steps per fit (default %(default)s)")
    synth.add_argument("--seed", type=int, default=0)
    synth.set_defaults(func=cmd_synth)

    base = sub.add_parser("export-base", help="write a built-in model as a standard Hugging Face folder",
                          description="Print the folder saved adapters name as their base (base_model_name_or_path: "
                                      "config, safetensors, tokenizer; what AutoPeftModelForCausalLM and lm-eval's "
                                      "pretrained= load), or copy it to --out for another machine.")
    base.add_argument("model", nargs="?", default="smollm2-135m", help="smollm2-135m (default) or tiny-llama")
    base.add_argument("--out", type=Path, default=None, help="copy the folder here (a new or empty folder)")
    base.set_defaults(func=cmd_export_base)

    ls = sub.add_parser("list", help="list methods, tasks or models with their defaults")
    ls.add_argument("what", choices=["methods", "tasks", "models"])
    ls.add_argument("--data-dir", type=Path, default=None, help="offline data folder")
    ls.set_defaults(func=cmd_list)

    from reports.cli import add_parsers

    add_parsers(sub)
    return parser


# OpenMP threads that wait for work sleep instead of spinning (unless the user set a policy).
# Must be set before torch loads its OpenMP runtime (workers inherit it). On a machine busier than
# its cores, spinning threads burn the CPU the others need: a SmolLM2 training step took about 5x the
# CPU time and 4x the wall time of a sleeping one at a load of 8-15 on 2 cores (README, "Two commands").
OMP_WAIT_POLICY = "PASSIVE"


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("OMP_WAIT_POLICY", OMP_WAIT_POLICY)
    parser = build_parser()
    args = parser.parse_args(argv)
    args.command_line = shlex.join(["bench", *(sys.argv[1:] if argv is None else argv)])
    if getattr(args, "data_dir", None):
        if not args.data_dir.is_dir():  # a typo must not fall back silently to other data
            print(f"bench: error: --data-dir {args.data_dir}: no such folder", file=sys.stderr)
            return 2
        os.environ["PEFT_BENCH_DATA"] = str(args.data_dir.resolve())
    # transformers' weight-loading bars too, here and in workers; in a log file (stderr not a
    # terminal) they would leave every redraw behind (tasks.progress prints the project's own bars as lines)
    if getattr(args, "no_progress", False) or not sys.stderr.isatty():
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
        if "transformers" in sys.modules:
            sys.modules["transformers"].utils.logging.disable_progress_bar()
    try:
        return int(args.func(args) or 0)
    except Exception as err:
        if not _is_user_error(err):
            raise
        print(f"bench: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bench: interrupted; finished runs are kept and a rerun resumes", file=sys.stderr)
        return 130


# -- bench run / sweep --------------------------------------------------------------------

def run_grid(args: argparse.Namespace) -> Grid:
    """The ``bench run`` arguments as the grid ``plan.runs`` resolves (a sweep point is one too)."""
    from harness.config import ConfigError, split_overrides
    from harness.plan import DEFAULT_RETENTION, Grid

    try:
        seeds = tuple(int(s) for s in comma_list(args.seeds)) or (0,)
    except ValueError:
        raise ConfigError(f"--seeds {args.seeds!r}: expected comma-separated integers") from None
    return Grid(model=args.model, methods=tuple(comma_list(args.methods)), tasks=args.tasks, sequence=args.sequence,
                seeds=seeds, per_task=args.per_task, retention=args.retention or DEFAULT_RETENTION,
                retention_text=args.retention_text,
                preset=args.preset, overrides=split_overrides(args.sets), max_steps=args.max_steps,
                epochs=args.epochs, eval_limit=args.eval_limit, protocol=args.protocol, backend=args.eval_backend,
                num_fewshot=args.num_fewshot, apply_chat_template=args.apply_chat_template)


def _budget_line(plans: list[Any]) -> str:
    t, e = plans[0].train, plans[0].eval
    steps = f"{t.max_steps} steps" if t.max_steps else f"{t.epochs:g} epochs"
    return (f"budget: {steps} x batch {t.batch_size} (max {t.max_length} tokens/example), lr {t.lr:g}, "
            f"eval {e.eval_limit or 'all'} items/task, model {plans[0].model}")


def check_names(methods: str | None, tasks: str | None) -> None:
    """Method and task names checked against the name lists, before torch is imported: a typo is
    answered in a fraction of a second (``plan.runs`` checks everything else)."""
    from methods.registry import check_name
    from tasks.registry import expand

    for name in comma_list(methods or ""):
        check_name(name)
    if tasks:
        expand(tasks)


def cmd_run(args: argparse.Namespace) -> int:
    from harness.trackers import parse_report_to

    check_names(args.methods, args.sequence or args.tasks)
    parse_report_to(args.report_to, args.out)  # a missing tracker or store, before the model loads
    from harness import launch, plan, records
    from harness.distributed.launch import check_shard, check_shares
    from harness.models import check_model, model_info
    from reports.block import end_of_run
    from reports.summary import summary_table

    plans = plan.runs(run_grid(args))
    check_model(args.model)
    plan.check_on_models(plans)
    out: Path = args.out
    print(_budget_line(plans))
    note = model_info(args.model).note
    if note:
        print(f"model {args.model}: {note}")
    options, job = _executor_setup(args)
    check_shares(job.ranks, [cfg.train.micro() for cfg in plans if cfg.train_tasks])
    check_shard(job.ranks, [cfg.method for cfg in plans if cfg.train_tasks])
    # bench run reruns failed runs (a command repeated after a fix); a sweep does so only when asked
    failed = launch.launch(plans, args.executor, options, job, force=args.force, retry_failed=True)
    df = records.rebuild_table(out)
    ids = {cfg.run_id for cfg in plans}
    end = end_of_run(out, ids, [cfg.method for cfg in plans], args.baseline)
    print()
    print(summary_table(df[df.run_id.isin(ids)], end.busy, end.near_chance))
    print(f"\n{end.text}")
    print(f"\nresults: {out.resolve()}/results.csv (and .parquet), run folders in {out.resolve()}/runs/")
    return 1 if failed else 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from harness import records, sweep
    from harness.distributed.launch import check_shard, check_shares
    from harness.sweep.grid import every_run, expand
    from reports.block import end_of_run
    from reports.summary import summary_table

    spec = sweep.load(args.file, tune=args.tune)
    if args.dry_run:
        print(sweep.dry_run(spec, args.out, args.retry_failed))
        return 0
    options, job = _executor_setup(args)
    check_shares(job.ranks, [cfg.train.micro() for cfg in every_run(expand(spec)[0]) if cfg.train_tasks])
    check_shard(job.ranks, [cfg.method for cfg in every_run(expand(spec)[0]) if cfg.train_tasks])
    finals, failed = sweep.run(spec, args.executor, options, job, retry_failed=args.retry_failed)
    df = records.rebuild_table(args.out)
    ids = {cfg.run_id for cfg in finals}
    end = end_of_run(args.out, ids, [name for name, _ in spec.methods], args.baseline,
                     spec.select.over if spec.select else None)
    print()
    print(summary_table(df[df.run_id.isin(ids)], end.busy, end.near_chance))
    print(f"\n{end.text}")
    print(f"\nresults: {args.out.resolve()}/results.csv (and .parquet), run folders in {args.out.resolve()}/runs/")
    return 1 if failed else 0


# -- bench eval / list ---------------------------------------------------------------------

def cmd_eval(args: argparse.Namespace) -> int:
    check_names(None, args.tasks)
    from harness import plan, records
    from harness.config import split_overrides
    from harness.driver import eval_only
    from harness.environment import pick_device
    from harness.models import check_model, resolve_model

    model, adapter = resolve_model(args.model, args.adapter)
    cfg = plan.eval_run(model, args.tasks, args.eval_limit, split_overrides(args.sets), args.protocol,
                        args.eval_backend, adapter, args.num_fewshot, args.apply_chat_template)
    check_model(model)
    if adapter:
        print(f"model {model} with adapter {adapter}")
    ranks = _ranks(args)
    if ranks.several:  # rank 0 writes the record (harness.distributed)
        from harness.executors import job_for
        from harness.executors.base import run_resolved

        record = run_resolved(cfg.resolved(), job_for(args.out, args.device, not args.no_progress, None, ranks=ranks))
    else:
        record = eval_only(cfg, args.out, pick_device(args.device), not args.no_progress)
    width = max([12, *(len(r["task"]) for r in record.get("evals", []))])  # names in full: a path's tail says nothing
    print(f"\n{'task':<{width}} {'acc':>7} {'stderr':>7} {'acc_norm':>9} {'n':>5} {'chance':>7}  protocol/backend/prompt")
    for r in record.get("evals", []):
        m = {x["name"]: x for x in r["metrics"]}
        first = m.get("acc") or next(iter(m.values()))
        chance = f"{r['chance']:.3f}" if r.get("chance") is not None else "-"
        norm = f"{m['acc_norm']['value']:>9.3f}" if "acc_norm" in m else f"{'-':>9}"
        stderr = float("nan") if first["stderr"] is None else first["stderr"]
        print(f"{r['task']:<{width}} {first['value']:>7.3f} {stderr:>7.3f} {norm} "
              f"{first['n'] or 0:>5} {chance:>7}  {r['protocol']}/{r['backend']}/{r['prompt']}")
    if record["status"] == "ok":
        return 0
    err = record.get("error", {})
    print(f"bench eval: FAILED ({err.get('type')}: {err.get('message', '')[:300]}) -> "
          f"{records.run_dir(args.out.resolve(), cfg.run_id)}")
    return 1


def cmd_compare(args: argparse.Namespace) -> int:
    from harness.config import ConfigError
    from reports.stats import compare_methods, format_comparison

    methods = comma_list(args.methods)
    if len(methods) != 2:
        raise ConfigError(f"--methods takes two methods, A,B; got {args.methods!r}")
    rows = compare_methods(args.results, methods[0], methods[1], task=args.task, phase=args.phase,
                           metric=args.metric)
    print(format_comparison(rows, methods[0], methods[1], args.metric))
    return 0


def cmd_perf(args: argparse.Namespace) -> int:
    from harness.perf.command import run

    return run(args)


def cmd_synth(args: argparse.Namespace) -> int:
    from harness.config import ConfigError
    from methods.localized_lora.synth import main as synth_main

    for option in ("size", "blocks", "steps"):
        if getattr(args, option) < 1:
            raise ConfigError(f"--{option} must be at least 1, got {getattr(args, option)}")
    try:
        ranks = [int(r) for r in comma_list(args.ranks)]
    except ValueError:
        raise ConfigError(f"--ranks {args.ranks}: expected whole numbers, e.g. 4,8,16") from None
    bad = [r for r in ranks if r % args.blocks or r <= 0]
    if bad or not ranks or args.size % args.blocks:
        raise ConfigError(f"--blocks {args.blocks} must divide --size ({args.size}) and every rank in --ranks {bad or ''}")
    synth_main(args.out, size=args.size, num_blocks=args.blocks, ranks=ranks, steps=args.steps, seed=args.seed)
    print(f"\nwrote {args.out}/synth.csv, synth.md, synth.png, synth.svg")
    return 0


def _defaults(spec: Any) -> str:
    shown = getattr(spec.config_cls, "shown_defaults", None)
    if shown is None:
        cfg = spec.default_config()
        shown = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    return " ".join(f"{k}={v}" for k, v in shown.items())


def cmd_export_base(args: argparse.Namespace) -> int:
    from harness.basefolder import export_base

    print(export_base(args.model, args.out))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    if args.what == "methods":
        from methods import registry

        for name in registry.names():
            try:
                spec = registry.get(name)
            except registry.MissingExtra as err:
                print(f"{name:<22} ({err})")
                continue
            presets = f" [presets: {', '.join(spec.presets)}]" if spec.presets else ""
            print(f"{name:<22} {spec.description}{presets}")
            print(f"{'':<22} defaults: {_defaults(spec) or '(none)'}")
        print(f"{'peft:<type>':<22} any peft tuner built from its config class, e.g. peft:vera, peft:ia3, peft:gralora")
        import peft
        from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

        from methods.peft_catalogue import status_lines

        for line in status_lines(peft.__version__, list(PEFT_TYPE_TO_CONFIG_MAPPING)):
            print(f"{'':<2}{line}")
    elif args.what == "tasks":
        from tasks import registry

        for line in registry.describe():
            print(line)
    else:
        from harness.models import REGISTRY

        for name, info in REGISTRY.items():
            print(f"{name:<16} {info.description}" + (f" ({info.note})" if info.note else ""))
        print(f"{'<hub id|path>':<16} any causal LM transformers can load (hub access or a local folder)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
