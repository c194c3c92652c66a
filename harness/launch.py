"""Launching planned runs: which to skip, which to (re)run, and the loop over an executor.

The policy, the same for ``bench run`` and sweeps: ``ok`` runs are skipped unless forced;
``failed`` runs (exception, NaN, killed worker) are rerun only on request, since they usually
fail again (``bench run`` asks, a command repeated after a fix; a sweep asks with
``--retry-failed``); runs never started or interrupted (Ctrl-C, or ``running`` left behind by a
killed sweep or a lost node) are simply run.
"""
from __future__ import annotations

import time
from pathlib import Path

from harness import executors, records, safe_io
from harness.config import RunConfig
from harness.executors.base import ExecutorOptions, Job

NOT_THE_RUNS_FAULT = ("KeyboardInterrupt", "OutputError")  # stopped from outside: run again, not "failed"


def run_state(out: Path, run_id: str) -> str | None:
    """ok, failed, interrupted, or None (never started). Interrupted runs did not fail on their
    own, so they are simply run again."""
    path = records.run_dir(out, run_id) / "run.json"
    if not path.exists():
        return None
    record = records.read_record(path)
    if record is None:  # damaged: reported, and run again
        return "interrupted"
    if record.status == "ok":
        return "ok"
    if record.status == "failed" and (record.error or {}).get("type") not in NOT_THE_RUNS_FAULT:
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


IN_ORDER = ("local", "inline")  # executors that run one run at a time, in the order given


def _clock() -> str:
    return time.strftime("%H:%M:%S")


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
    finished = executors.get(executor)(todo, job, options)
    for k in range(1, len(todo) + 1):
        if executor in IN_ORDER:  # the next run starts when the next outcome is asked for
            steps = records.run_dir(job.out, todo[k - 1].run_id) / "steps.jsonl"
            print(f"[{k}/{len(todo)}] {describe(todo[k - 1], labels)}: started {_clock()} (steps: {steps})", flush=True)
        cfg, record = next(finished)
        folder = records.run_dir(job.out, cfg.run_id)
        err = record.get("error", {})
        if err.get("type") == "OutputError":  # a full or unwritable --out: every later run would fail too
            raise safe_io.OutputError(err.get("message", f"cannot write {folder}"))
        if record.get("status") == "busy" or record.get("skipped"):
            why = record.get("skipped", "running in another process")
            print(f"[{k}/{len(todo)}] {describe(cfg, labels)}: {why}, skipped ({folder})", flush=True)
            continue
        if record.get("status") == "ok":
            print(f"[{k}/{len(todo)}] {describe(cfg, labels)}: ok at {_clock()} -> {folder}", flush=True)
        else:
            failed += 1
            print(f"[{k}/{len(todo)}] {describe(cfg, labels)}: FAILED ({err.get('type')}: "
                  f"{err.get('message', '')[:300]}); continuing -> {folder}", flush=True)
        try:
            records.rebuild_table(job.out)
        except safe_io.OutputError as full:  # the run itself is recorded; the table is rebuilt at the end
            safe_io.warn(str(full))
    return failed
