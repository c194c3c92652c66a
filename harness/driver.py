"""Run one ``RunConfig`` end to end and write its folder: a recipe that reads top to bottom.

    setup    seed, the tasks' data, the model
    before   every evaluated task scored before training (cached per model, task and protocol)
    adapt    the method prepares the model (timed and memory-tracked as calibration)
    stages   train, then evaluate every task; one stage, or one per task with ``--sequence`` (one
             continued model, checkpointed after every stage so an interrupted sequence resumes)
    finish   validation items, forgetting figures, costs, the method's own facts; the trained
             model saved (``--save``, ``harness.export``)

``eval_only`` (``bench eval``) is the same recipe's setup and evaluation, phase ``eval``. The
record's fields are filled here, in recipe order; ``runfolder.RunFolder`` holds it and is the only
writer of the run folder. Knows nothing about any particular method or task: it asks the registries.
"""
from __future__ import annotations

import hashlib
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

from harness import distributed, locks, machineload, metrics, records, safe_io
from harness.config import ConfigError, RunConfig, TrainConfig, config_from_dict, method_context
from harness.schema.record import Derived, Evaluated, Evaluation, Figure, RunRecord, evaluation_from_json
from harness.schema.settings import BEFORE_EVAL_KEYS
from harness.data import TrainBatches
from harness.distributed.team import end_of_training
from harness.export import DEFAULT_SAVE, save_trained
from harness.forgetting import (backward_transfer, final_average, mean_forgetting, retention_forgetting,
                                sequential_forgetting)
from harness.measure import MemoryProbe, param_bytes, step_summary, total_params
from harness.basefolder import card_facts, hf_base
from harness.models import cache_dir, load_model
from harness.runfolder import MethodFiles, RunFolder
from harness.trainer import TrainResult, train
from methods import registry as method_registry
from methods.base import Adapted, TrainContext
from tasks import protocols
from tasks import registry as task_registry

EVAL_SCORER_VERSION = 3  # bump when scoring changes, so cached evaluations are not reused
TEXT_WINDOW, TEXT_MAX_WINDOWS = 256, 64
VALIDATION_SEED = 0  # held-out items do not depend on the run: every method is selected on the same ones


def run_one(cfg: RunConfig, out: Path, device: torch.device, progress: bool = True,
            command: str | None = None, skip_ok: bool = False, save: str = DEFAULT_SAVE,
            report_to: tuple[str, ...] = ()) -> dict[str, Any]:
    """Execute a run and write its folder; returns its record. Exceptions are recorded, never
    raised, except that a full or unwritable ``out`` raises ``safe_io.OutputError`` (every later
    run would hit it too). ``save``: what to keep of the trained model (``harness.export``);
    ``report_to``: trackers to feed.

    The run folder's lock is held throughout: a second process asking for the same run gets
    ``status: busy`` at once and leaves it alone; with ``skip_ok`` a run another process finished
    since this one was planned is returned as it is instead of being done again.
    """
    out = Path(out)
    folder = records.run_dir(out, cfg.run_id)
    try:
        with locks.run_lock(folder) as mine:
            if not mine:
                return {"run_id": cfg.run_id, "status": "busy", "config": cfg.resolved()}
            done = records.read_record(folder / "run.json") if skip_ok else None
            if done and done.status == "ok":
                return {**done.to_json(), "skipped": "finished meanwhile by another process"}
            return _run(cfg, out, device, progress, command, save, report_to)
    except OSError as err:
        raise safe_io.output_error(err, out) or err from None


def _run(cfg: RunConfig, out: Path, device: torch.device, progress: bool, command: str | None, save: str,
         report_to: tuple[str, ...]) -> dict[str, Any]:
    """The recipe, with the run folder locked."""
    run = RunFolder(cfg, out, device, report_to=report_to, command=command)
    if cfg.sequence:
        run.resume()
    with run.recording():
        # setup
        torch.manual_seed(cfg.seed)
        spec = method_registry.get(cfg.method)
        run.record.data = _data_provenance(cfg)
        model, tokenizer = load_for_run(cfg, device)
        run.record.base_params = base_params = total_params(model)
        # evaluate before
        if not run.stages_done:
            for name in _eval_names(cfg):
                summary, samples = cached_before_eval(out, model, tokenizer, name, cfg, device, progress)
                run.add_eval(summary, samples)
        if cfg.retention_text:
            run.record.text_loss_before = text_loss(out, model, tokenizer, cfg, device)
        if (team := distributed.current()) is not None:
            team.instruct(distributed.CONTINUE)  # the other ranks go on to adapt (follower.follow)
        # adapt
        first = build_stage(cfg, 1, tokenizer, device, run.method_files)
        calibration = MemoryProbe(device)
        t0 = time.perf_counter()
        with calibration.track():
            adapted = spec.adapt(model, config_from_dict(spec.config_cls, cfg.method_config), first.ctx)
        calibration_time_s = time.perf_counter() - t0
        if run.stages_done:
            adapted.load_state_dict(run.checkpoint())
        if team is not None:
            team.start_from_rank0(adapted, cfg.seed)
        # stages
        results, probe = _train_stages(cfg, run, adapted, tokenizer, first, device, progress)
        # finish
        if cfg.validation:  # model selection: the held-out training items, never test items
            for name in cfg.train_tasks:
                run.add_eval(*evaluate_task(adapted.for_eval(), tokenizer, name, cfg, metrics.VAL, device, progress,
                                            validation_items(cfg, name)))
        if cfg.retention_text:
            run.record.text_loss_after = text_loss(None, adapted.for_eval(), tokenizer, cfg, device)
        if team is not None:
            team.instruct(distributed.CONTINUE)  # the other ranks are done
        run.record.derived, run.record.accuracy_matrix = derived_metrics(cfg, run.record.evals, run.record)
        run.record.costs = (_costs(results, cfg.train, probe, calibration_time_s, adapted, base_params)
                            if results else {})
        run.record.calibration_memory = calibration.figures
        run.record.method_record = adapted.record()
        if save != "none":  # after every evaluation: merging may change the model in place
            run.record.saved = save_trained(adapted, save, run.saved_model(save), hf_base(cfg.model), tokenizer,
                                            lambda: load_model(cfg.model)[0],
                                            {"run_id": cfg.run_id, "method": cfg.method}, card_facts(cfg.model))
            print(f"saved {save} to {run.saved_model(save)} (base: {run.record.saved['base_model']})", flush=True)
    return run.record.to_json()


def eval_only(cfg: RunConfig, out: Path, device: torch.device, progress: bool = True) -> dict[str, Any]:
    """``bench eval``: score a model without training, recorded as a run of method ``none`` (a
    failure too) and added to the tidy table; returns the record."""
    run = RunFolder(cfg, out, device)
    with run.recording():
        run.record.evaluated = Evaluated(cfg.model, cfg.adapter, adapter_digest(cfg.adapter))
        if (team := distributed.current()) is not None:
            run.record.distributed = team.describe()
        model, tokenizer = load_for_run(cfg, device)
        for name in cfg.eval_tasks:
            run.add_eval(*evaluate_task(model, tokenizer, name, cfg, metrics.EVAL, device, progress))
        if team is not None:
            team.instruct(distributed.CONTINUE)
    records.rebuild_table(out)
    return run.record.to_json()


def adapter_digest(adapter: str | None) -> str | None:
    """A digest of every file of an adapter folder (names and contents), so two evaluations of one
    folder path holding different weights are told apart; None without an adapter."""
    if adapter is None:
        return None
    root = Path(adapter)
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]:
        digest.update(str(path.relative_to(root) if root.is_dir() else path.name).encode() + b"\0")
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]


# -- setup ----------------------------------------------------------------------------------

def _eval_names(cfg: RunConfig) -> list[str]:
    """Every task scored before and after training: the evaluated tasks, then the retention tasks."""
    return list(dict.fromkeys(cfg.eval_tasks + cfg.retention_tasks))


def _data_provenance(cfg: RunConfig) -> dict[str, dict[str, Any]]:
    """What every task of the run read: file checksums, where the split came from, its sizes."""
    return {name: {"checksums": d.checksums, "split": d.split_note, "n_train": len(d.train), "n_test": len(d.test)}
            for name in dict.fromkeys(cfg.train_tasks + tuple(_eval_names(cfg)))
            for d in [task_registry.load(task_registry.get(name))]}


def load_for_run(cfg: RunConfig, device: torch.device) -> tuple[torch.nn.Module, Any]:
    """The run's model (with its ``--adapter``, if any) on ``device``, and its tokenizer."""
    model, tokenizer = load_model(cfg.model, adapter=cfg.adapter)
    return model.to(device), tokenizer


# -- stages ---------------------------------------------------------------------------------

@dataclass
class Stage:
    """One stage's training: its tasks, batches, optimizer steps and what the method is told."""

    number: int  # 1-based
    tasks: tuple[str, ...]
    batches: TrainBatches
    steps: int
    ctx: TrainContext


def build_stage(cfg: RunConfig, number: int, tokenizer: Any, device: torch.device,
                files: MethodFiles | None) -> Stage:
    """Stage ``number`` (1-based): batches of its tasks' training items (in the protocol's text,
    held-out validation items left out), seeded ``seed + number - 1``, and the method context over
    its steps (``files``: where the method writes its own files in the run folder). Built when the stage
    starts, so its data is not held in memory before."""
    tc, tasks, seed = cfg.train, cfg.stages()[number - 1], cfg.seed + number - 1
    train_pair = protocols.get(cfg.protocol).train_pair
    held = {ex for name in tasks for ex in validation_items(cfg, name)}
    pairs = [train_pair(task, ex) for task, ex in task_registry.train_examples(tasks) if ex not in held]

    def batches(batch_seed: int) -> TrainBatches:
        return TrainBatches(pairs, tokenizer, tc.max_length, tc.batch_size, tc.micro(), batch_seed,
                            tc.train_on_inputs, device)

    def calibration() -> Iterator[dict[str, torch.Tensor]]:  # a differently seeded pass over the same items
        return (mb for step in batches(seed + 1) for mb in step)

    training = batches(seed)
    steps = tc.resolved_steps(len(training))
    return Stage(number, tasks, training, steps, method_context(tc, steps, seed, device, calibration, files))


def _train_stages(cfg: RunConfig, run: RunFolder, adapted: Adapted, tokenizer: Any, first: Stage,
                  device: torch.device, progress: bool) -> tuple[list[TrainResult], MemoryProbe]:
    """Train each stage not done yet, then evaluate every task; returns the stages' results and
    the memory probe over all their training."""
    results: list[TrainResult] = []
    loads: list[dict[str, Any]] = []  # machine load per training (harness.machineload)
    probe = MemoryProbe(device)
    count = len(cfg.stages())
    team = distributed.current()  # several processes: this is rank 0 (harness.distributed.follower)
    for number in range(run.stages_done + 1, count + 1):
        stage = first if number == 1 else build_stage(cfg, number, tokenizer, device, run.method_files)
        if number > 1:
            adapted.start_stage(stage.ctx)
        # the first stage trained here profiles its last timing warm-up step (excluded from timing)
        profile_step = max(0, min(cfg.train.timing_warmup_steps, stage.steps) - 1) if not results else -1
        tag = stage.number if cfg.sequence else None
        with probe.track(), machineload.track() as load:
            result = train(adapted, stage.batches, stage.steps, device, stage.ctx.grad_clip, cfg.train.precision,
                           profile_step, progress, on_step=lambda step, tag=tag: run.add_step(step, tag), team=team)
        results.append(result)
        loads.append(load)
        if team is not None:  # one stage: --sequence runs on one process
            run.record.distributed = end_of_training(team, adapted, probe)
        phase = metrics.stage(stage.number) if cfg.sequence else metrics.AFTER
        for name in _eval_names(cfg):
            run.add_eval(*evaluate_task(adapted.for_eval(), tokenizer, name, cfg, phase, device, progress))
        if cfg.sequence:
            run.finish_stage(stage.number, stage.tasks, stage.steps, result.train_time_s,
                             adapted.state_dict() if number < count else None)
    if loads:
        run.record.load = machineload.combine(loads)
    return results, probe


# -- evaluation -----------------------------------------------------------------------------

def _data_sha(checksums: dict[str, str]) -> str:
    """One digest over the checksums of every file a task read."""
    return hashlib.sha256(json.dumps(checksums, sort_keys=True).encode()).hexdigest()[:16]


def _cache_path(out: Path, kind: str, key_src: dict[str, Any]) -> Path:
    key = hashlib.sha256(json.dumps(key_src, sort_keys=True).encode()).hexdigest()[:20]
    return Path(out) / "cache" / kind / f"{records.file_name(key_src.get('task', 'text'))}-{key}.json"


def evaluate_task(model: torch.nn.Module, tokenizer: Any, task_name: str, cfg: RunConfig, phase: str,
                  device: torch.device, progress: bool, items: list[Any] | None = None
                  ) -> tuple[Evaluation, list[dict[str, Any]]]:
    """Evaluate one task under the run's protocol and backend; returns the eval summary (metrics
    with stderr, and how they were measured) and per-sample records. Backends keep exported
    files (lm-eval task YAML, named by a hash of their content) in the project cache."""
    task = task_registry.get(task_name)
    data = task_registry.load(task)
    ec = cfg.eval
    team = distributed.current() if protocols.backend_for(task, cfg.backend) == "native" else None
    if team is not None and team.rank == 0:  # every rank scores some batches (follower.serve)
        team.instruct(("evaluate", task_name, phase, items))
    if items is None:  # the test items; validation passes its held-out training items
        items = data.test[:ec.eval_limit] if ec.eval_limit else data.test
    settings = protocols.EvalSettings(batch_size=ec.eval_batch_size, device=device, progress=progress,
                                      num_beams=ec.num_beams, max_new_tokens=ec.max_new_tokens,
                                      workdir=cache_dir(), limit=ec.eval_limit, num_fewshot=cfg.num_fewshot,
                                      apply_chat_template=cfg.apply_chat_template, share=team)
    ev = protocols.evaluate(cfg.backend, cfg.protocol, model, tokenizer, task, items, settings)
    summary = Evaluation(task=task_name, phase=phase, metrics=ev.metrics, protocol=ev.protocol,
                         backend=protocols.backend_for(task, cfg.backend), prompt=ev.prompt, shots=ev.shots,
                         chat_template=ev.chat_template, data_sha256=_data_sha(data.checksums), chance=task.chance,
                         split_note=data.split_note, settings=ev.extra or None)
    return summary, ev.samples


def cached_before_eval(out: Path, model: torch.nn.Module, tokenizer: Any, task_name: str, cfg: RunConfig,
                       device: torch.device, progress: bool) -> tuple[Evaluation, list[dict[str, Any]]]:
    """The "before" evaluation does not depend on the method: compute it once per model setup
    (the settings it depends on: ``harness.schema.settings.BEFORE_EVAL_KEYS``). ``cached`` says
    whether it was read from the cache."""
    data = task_registry.load(task_registry.get(task_name))
    resolved = cfg.resolved()
    recorded = {**resolved, **resolved["train"], **resolved["eval"]}  # a key left out at its default stays out
    key_src = {**{k: recorded[k] for k in BEFORE_EVAL_KEYS if k in recorded}, "task": task_name,
               "data": data.checksums, "scorer": EVAL_SCORER_VERSION, "device": device.type}
    path = _cache_path(out, "eval", key_src)
    cached = safe_io.read_json(path, _cache_problem("summary", "samples"), then="evaluated again")
    if cached:
        try:
            summary = evaluation_from_json({**cached["summary"], "cached": True})
            return summary, cached["samples"]
        except TypeError as err:
            safe_io.warn(f"{path}: damaged ({err}); evaluated again")
    summary, samples = evaluate_task(model, tokenizer, task_name, cfg, metrics.BEFORE, device, progress)
    safe_io.write_json(path, {"key": key_src, "summary": summary.to_json(), "samples": samples})
    summary.cached = False
    return summary, samples


def _cache_problem(*keys: str) -> Any:
    """A shape check for a cache file: an object with ``keys``."""
    return lambda v: None if isinstance(v, dict) and all(k in v for k in keys) else f"not a cache entry with {keys}"


def text_loss(out: Path | None, model: torch.nn.Module, tokenizer: Any, cfg: RunConfig,
              device: torch.device) -> float:
    """Held-out LM loss; cached for the base model (``out`` given), computed fresh otherwise."""
    from tasks.heldout import mean_token_loss, text_windows
    from tasks.sources import sha256

    path = Path(cfg.retention_text)
    windows = text_windows(tokenizer, path, TEXT_WINDOW, TEXT_MAX_WINDOWS)
    if out is None:
        return mean_token_loss(model, windows, device)
    key_src = {"model": cfg.model, "text": sha256(path), "window": TEXT_WINDOW, "n": len(windows)}
    cache = _cache_path(out, "text", key_src)
    cached = safe_io.read_json(cache, _cache_problem("loss"), then="computed again")
    if cached:
        return cached["loss"]
    loss = mean_token_loss(model, windows, device)
    safe_io.write_json(cache, {"key": key_src, "loss": loss})
    return loss


def validation_items(cfg: RunConfig, task_name: str) -> list[Any]:
    """The ``cfg.validation`` training items of a task held out from training (fixed seed)."""
    if not cfg.validation:
        return []
    train = task_registry.load(task_registry.get(task_name)).train
    if cfg.validation >= len(train):
        raise ConfigError(f"validation {cfg.validation}: task {task_name} has only {len(train)} training items")
    return [train[i] for i in sorted(random.Random(VALIDATION_SEED).sample(range(len(train)), cfg.validation))]


# -- the run's figures: costs and derived metrics --------------------------------------------

def _costs(results: list[TrainResult], tc: TrainConfig, probe: MemoryProbe, calibration_time_s: float,
           adapted: Adapted, base_params: int) -> dict[str, Figure]:
    """The run's cost figures with their catalogue units, over every stage's steps; the first
    stage's profiled step is the one excluded from timing and the one whose profile is reported."""
    first = results[0]
    steps = [s for r in results for s in r.steps]
    trainable = adapted.trainable_params()
    last = steps[-5:]
    figures = {
        **step_summary(steps, tc.timing_warmup_steps, excluded={first.profiled_step}),
        "train_time_s": sum(r.train_time_s for r in results),
        "calibration_time_s": calibration_time_s,
        **{k: v for k, v in probe.figures.items() if k in metrics.CATALOGUE and metrics.unit(k) == "bytes"},
        "trainable_params": trainable,
        "total_params": base_params,
        "trainable_pct": 100.0 * trainable / base_params,
        "param_bytes": param_bytes(adapted.model),
        **first.profile,
        "final_loss": sum(s["loss"] for s in last) / len(last),
        "steps": len(steps),
        # several processes: what a step passed to collectives (harness.distributed.team)
        **({"comm_bytes_per_step": sum(s["comm_bytes"] for s in steps) / len(steps)}
           if "comm_bytes" in steps[0] else {}),
    }
    return {k: Figure(v, metrics.unit(k)) for k, v in figures.items()}


def derived_metrics(cfg: RunConfig, evals: list[Evaluation], record: RunRecord
                    ) -> tuple[list[Derived], dict[str, Any] | None]:
    """Forgetting figures (harness/forgetting.py): retention, sequential matrix, BWT, LM-loss
    change; and the sequential accuracy matrix (None without ``--sequence``)."""
    acc = {(e.task, e.phase): e.value("acc") for e in evals}
    last = metrics.stage(len(cfg.train_tasks)) if cfg.sequence else metrics.AFTER
    matrix = None

    def figure(task: str, name: str, value: float, n: int | None = None) -> Derived:
        return Derived(task, last, name, value, metrics.unit(name), n)

    out: list[Derived] = []
    retention = [t for t in cfg.retention_tasks if (t, metrics.BEFORE) in acc and (t, last) in acc]
    if retention:
        lost = retention_forgetting({t: acc[(t, metrics.BEFORE)] for t in retention},
                                    {t: acc[(t, last)] for t in retention})
        out += [figure(t, "forgetting", v) for t, v in lost.items()]
        out.append(figure("retention-mean", "forgetting", mean_forgetting(lost.values()), n=len(lost)))
    if cfg.sequence:
        seq = list(cfg.train_tasks)
        rows = [metrics.stage(i + 1) for i in range(len(seq))]
        R = [[acc[(t, row)] for t in seq] for row in rows]
        matrix = {"rows": rows, "cols": seq, "R": R}
        out.append(figure("sequence", "final_avg_acc", final_average(R)))
        out.append(figure("sequence", "bwt", backward_transfer(R)))
        out += [figure(t, "forgetting", v) for t, v in zip(seq, sequential_forgetting(R))]
    if record.text_loss_before is not None and record.text_loss_after is not None:
        out.append(figure("retention-text", "lm_loss_forgetting", record.text_loss_after - record.text_loss_before))
    return out, matrix
