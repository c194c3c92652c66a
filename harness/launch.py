"""Launching planned runs: which to skip, which to (re)run, and the loop over an executor.

The policy, the same for ``bench run`` and sweeps: ``ok`` runs are skipped unless forced;
``failed`` runs (exception, NaN, killed worker) are rerun only on request, since they usually
fail again (``bench run`` asks, a command repeated after a fix; a sweep asks with
``--retry-failed``); runs never started or interrupted (Ctrl-C, or ``running`` left behind by a
killed sweep or a lost node) are simply run.
"""
from __future__ import annotations

from pathlib import Path

from harness import executors, records
from harness.config import RunConfig
from harness.executors.base import ExecutorOptions, Job


def run_state(out: Path, run_id: str) -> str | None:
    """ok, failed, interrupted, or None (never started). Interrupted runs did not fail on their
    own, so they are simply run again."""
    path = records.run_dir(out, run_id) / "run.json"
    if not path.exists():
        return None
    record = records.read_json(path)
    if record.get("status") == "ok":
        return "ok"
    if record.get("status") == "failed" and record.get("error", {}).get("type") != "KeyboardInterrupt":
        return "failed"
    return "interrupted"


def should_run(state: str | None, force: bool = False, retry_failed: bool = False) -> bool:
    """ok: only when forced; failed: only when retrying failures; never started or interrupted: yes."""
    if state == "ok":
        return force
    if state == "failed":
        return force or retry_failed
    return True


def unique(cfgs: list[RunConfig]) -> list[RunConfig]:
    """The runs without repeats (two grids may plan the same run), in order."""
    return list({cfg.run_id: cfg for cfg in cfgs}.values())


def describe(cfg: RunConfig, labels: dict[str, str] | None = None) -> str:
    """A run in words for progress lines: method, tasks, seed, and its sweep settings if any."""
    settings = (labels or {}).get(cfg.run_id)
    tag = f"{cfg.method} on {'+'.join(cfg.train_tasks)} seed {cfg.seed}" + (f" [{settings}]" if settings else "")
    return tag + (f" (tuning: {cfg.validation} held out)" if cfg.validation else "")


def listing(title: str, cfgs: list[RunConfig], out: Path, retry_failed: bool = False,
            labels: dict[str, str] | None = None) -> list[str]:
    """A dry run: every run with its status in ``out`` and what a submission would do with it."""
    cfgs = unique(cfgs)
    states = [run_state(out, cfg.run_id) for cfg in cfgs]
    todo = sum(should_run(s, retry_failed=retry_failed) for s in states)
    lines = [f"{title}: {len(cfgs)} run(s), {todo} to run"]
    for cfg, state in zip(cfgs, states):
        action = "run" if should_run(state, retry_failed=retry_failed) else (
            "skip (done)" if state == "ok" else "skip (failed; --retry-failed reruns it)")
        lines.append(f"  {cfg.run_id}  {describe(cfg, labels)}  status={state or 'new'}  {action}")
    return lines


def launch(cfgs: list[RunConfig], executor: str, options: ExecutorOptions, job: Job, *, force: bool = False,
           retry_failed: bool = False, labels: dict[str, str] | None = None) -> int:
    """Hand the runs not done yet to the executor, one line per run; returns how many are not ok."""
    cfgs = unique(cfgs)
    todo, failed = [], 0
    for i, cfg in enumerate(cfgs, 1):
        state = run_state(job.out, cfg.run_id)
        folder = records.run_dir(job.out, cfg.run_id)
        if should_run(state, force, retry_failed):
            todo.append(cfg)
        elif state == "ok":
            print(f"[{i}/{len(cfgs)}] {describe(cfg, labels)}: already done, skipped ({folder})")
        else:
            failed += 1
            print(f"[{i}/{len(cfgs)}] {describe(cfg, labels)}: failed before, skipped (--retry-failed reruns it; "
                  f"{folder})")
    if not todo:
        return failed
    print(f"running {len(todo)} run(s) with the {executor} executor", flush=True)
    for k, (cfg, record) in enumerate(executors.get(executor)(todo, job, options), 1):
        folder = records.run_dir(job.out, cfg.run_id)
        if record.get("status") == "ok":
            print(f"[{k}/{len(todo)}] {describe(cfg, labels)}: ok -> {folder}", flush=True)
        else:
            failed += 1
            err = record.get("error", {})
            print(f"[{k}/{len(todo)}] {describe(cfg, labels)}: FAILED ({err.get('type')}: "
                  f"{err.get('message', '')[:300]}); continuing -> {folder}", flush=True)
        records.rebuild_table(job.out)
    return failed
