"""``bench perf`` as a command: resolve the setup, measure, and check against a baseline.

The setup comes from explicit options, else (when checking or re-recording) the baseline's own
setup, else ``PerfConfig``'s defaults. A baseline is loaded and validated before anything is
measured. ``--repeat N`` runs N whole checks back to back and reports how many failed: with
unmodified code that is the gate's false-alarm rate; with ``--inject-slowdown`` (a test aid that
stretches one method's timed steps) it is the detection rate.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

from harness.config import ConfigError, split_overrides
from harness.distributed.launch import Ranks, run_ranks
from harness.distributed.launch import check as check_ranks
from harness.environment import pick_device
from harness.perf import baseline as baselines
from harness.perf.opprofile import format_breakdown
from harness.perf.timing import FLOOR, PerfConfig, format_table, measure, spread, write_json
from harness.perf.verdict import RECHECK_FACTOR, Comparison, compare, confirm, markdown, publish
from harness.safe_io import write_text
from harness.schema.settings import comma_list
from methods import registry

# option name -> PerfConfig field
_OPTIONS = {"methods": "methods", "shape": "shape", "batch_size": "batch_size", "seq_len": "seq_len",
            "rounds": "rounds", "steps_per_round": "steps_per_round", "warmup": "warmup_steps",
            "start_step": "start_step", "threads": "threads", "clock": "clock"}


def _slowdowns(text: str | None, methods: tuple[str, ...]) -> dict[str, float]:
    """``METHOD=FACTOR[,...]`` -> {method: factor}; each factor >= 1, each method measured."""
    out: dict[str, float] = {}
    for item in comma_list(text or ""):
        name, _, factor = item.partition("=")
        try:
            out[name] = float(factor)
        except ValueError:
            raise ConfigError(f"--inject-slowdown takes METHOD=FACTOR, e.g. lora=1.3; got {item!r}") from None
        if name not in methods or out[name] < 1.0:
            raise ConfigError(f"--inject-slowdown {item!r}: the method must be measured ({', '.join(methods)}) "
                              "and the factor at least 1")
    return out


def _config(args: argparse.Namespace, baseline: dict[str, Any] | None) -> PerfConfig:
    setup = dataclasses.asdict(PerfConfig())
    if baseline is not None:
        setup.update({k: v for k, v in baseline["config"].items() if k in setup and k != "device"})
    for option, key in _OPTIONS.items():
        value = getattr(args, option)
        if value is not None:
            setup[key] = comma_list(value) if option == "methods" else value
    if args.sets is not None:
        setup["overrides"] = split_overrides(args.sets)
    for key in ("batch_size", "seq_len", "rounds", "steps_per_round"):
        if setup[key] < 1:
            raise ConfigError(f"--{key.replace('_', '-')} must be at least 1, got {setup[key]}")
    if min(setup["start_step"], setup["warmup_steps"], setup["threads"], args.profile) < 0:
        raise ConfigError("--start-step, --warmup, --threads and --profile must be >= 0")
    for name in setup["methods"]:
        registry.get(name)
    setup["methods"] = tuple(setup["methods"])
    # a CPU-time baseline (the committed ones) is measured on the CPU even where CUDA is present
    setup["device"] = "cpu" if setup["clock"] == "cpu" and args.device == "auto" else str(pick_device(args.device))
    if setup["clock"] == "cpu" and (setup["threads"] != 1 or setup["device"] != "cpu"):
        raise ConfigError("--clock cpu times one thread: it needs --threads 1 and a CPU device")
    setup["inject_slowdown"] = _slowdowns(args.inject_slowdown, setup["methods"])
    return PerfConfig(**setup)


def check(cfg: PerfConfig, baseline: dict[str, Any], result: dict[str, Any], progress: bool) -> Comparison:
    """Compare ``result`` with the baseline; re-measure any suspect at once before judging it."""
    comparison = compare(baseline, result)
    suspects = comparison.suspects()
    if suspects:
        again = dataclasses.replace(cfg, methods=tuple(suspects), rounds=RECHECK_FACTOR * cfg.rounds)
        confirm(comparison, measure(again, progress=progress))
    return comparison


def pooled(first: dict[str, Any], more: list[dict[str, Any]]) -> dict[str, Any]:
    """``first`` with every method's per-round ratios pooled over all the measurements.

    A ratio's median moves by ~5-10% from one measurement to the next on a shared VM, more than
    its rounds' spread suggests; a baseline recorded from one measurement carries that offset
    into every later check, so a baseline is recorded from several.
    """
    for name, row in first["methods"].items():
        rounds = row["ratio_to_floor_rounds"] + [r for m in more for r in m["methods"][name]["ratio_to_floor_rounds"]]
        row.update(ratio_to_floor_rounds=rounds, ratio_to_floor=statistics.median(rounds), ratio_to_floor_spread=spread(rounds))
    first["measurements"] = 1 + len(more)
    return first


def _loadavg() -> str:
    try:
        return "load " + " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "load n/a"


def repeat(cfg: PerfConfig, baseline: dict[str, Any], times: int) -> int:
    """Run ``times`` checks; report the false-alarm rate, or with injected slowdowns the detection rate."""
    injected = set(cfg.inject_slowdown)
    caught = false_alarms = 0
    for i in range(1, times + 1):
        comparison = check(cfg, baseline, measure(cfg, progress=False), progress=False)
        failed = {f.method for f in comparison.findings if f.regressed}
        rechecks = [f"{f.method}: {f.recheck}" for f in comparison.findings if f.recheck]
        caught += bool(injected) and injected <= failed
        false_alarms += bool(failed - injected)
        print(f"check {i}/{times}: {'FAIL ' + ','.join(sorted(failed)) if failed else 'pass'} ({_loadavg()})"
              + "".join(f"\n  {r}" for r in rechecks), flush=True)
    print(f"false alarms: {false_alarms}/{times} checks failed on a method with no injected slowdown")
    if injected:
        spec = ", ".join(f"{m} x{f:g}" for m, f in cfg.inject_slowdown.items())
        print(f"detection: {caught}/{times} checks failed on the injected slowdown ({spec}; a test aid)")
    return 0 if false_alarms == 0 and (not injected or caught == times) else 1


def _ranks(args: argparse.Namespace, cfg: PerfConfig) -> Ranks:
    ranks = Ranks(args.nproc, args.nnodes, args.rdzv_endpoint, args.dist_backend, args.dist_timeout)
    check_ranks(ranks, cfg.device)
    return ranks


def measure_on_ranks(cfg: PerfConfig, ranks: Ranks, profile_steps: int) -> dict[str, Any]:
    """``measure`` on ``ranks`` processes (torch.distributed.run): the global batch shared as in a
    run, step times the slowest rank's, the floor measured at the same world size."""
    with tempfile.TemporaryDirectory(prefix="peft-bench-perf-") as tmp:
        target = Path(tmp) / "result.json"
        how = run_ranks({"perf": dataclasses.asdict(cfg), "result": str(target), "profile_steps": profile_steps},
                        ranks, "perf")
        if how or not target.exists():
            raise RuntimeError(f"bench perf on {ranks.world_size} processes failed: {how or 'no result written'}")
        result = json.loads(target.read_text())
    result["world_size"] = ranks.world_size
    return result


def run(args: argparse.Namespace) -> int:
    """The whole of ``bench perf``; exit 1 when a check fails, 2 (via ConfigError) on bad input."""
    path: Path | None = args.check
    baseline = baselines.load(path) if path is not None and (not args.update or path.exists()) else None
    cfg = _config(args, baseline)
    if cfg.inject_slowdown and (baseline is None or args.update):
        raise ConfigError("--inject-slowdown works with --check BASELINE, never with --update")
    if args.repeat and path is None:
        raise ConfigError("--repeat works with --check BASELINE (checks) or --check BASELINE --update (recording)")
    if args.repeat and not args.update:
        return repeat(cfg, baseline, args.repeat)
    ranks = _ranks(args, cfg)
    if ranks.several:
        if path is not None:
            raise ConfigError("--check/--update: the perf gate's baselines are measured on one process; drop --nproc")
        result = measure_on_ranks(cfg, ranks, args.profile)
    else:
        result = measure(cfg, progress=not args.no_progress, profile_steps=args.profile)
    if args.update and args.repeat > 1:
        result = pooled(result, [measure(cfg, progress=not args.no_progress) for _ in range(args.repeat - 1)])
    print(format_table(result))
    if "op_profile" in result:
        print(format_breakdown(result["op_profile"]["ops"], FLOOR))
    if args.json:
        write_json(result, args.json)
        print(f"wrote {args.json}")
    if path is None:
        return 0
    if args.update:
        updated, notes = baselines.with_measurement(baseline, result)
        write_text(path, baselines.dumps(updated))
        print("\n".join([*notes, f"baseline updated: {path} (machines: {', '.join(updated['machines'])})"]))
        return 0
    comparison = check(cfg, baseline, result, progress=not args.no_progress)
    summary = markdown(comparison, path)
    print(f"\n{summary}")
    publish(summary)
    return 1 if comparison.failed else 0
