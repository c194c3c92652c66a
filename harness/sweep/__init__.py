"""Sweeps: a grid of ``bench run`` invocations in one file, run by any executor, resumable.

``file`` parses a sweep file into a ``Sweep``; ``grid`` expands its axes into ``plan.Grid``s and
plans them exactly as ``bench run`` does; ``select`` tunes one key on held-out training items;
``harness.launch`` skips finished runs and hands the rest to the executor. Here: the whole sweep,
tuning runs first (with ``select``), then the final runs.
"""
from __future__ import annotations

from pathlib import Path

from harness import launch, plan
from harness.config import RunConfig
from harness.executors.base import ExecutorOptions, Job
from harness.sweep import select
from harness.sweep.file import Sweep, load
from harness.sweep.grid import expand, every_run

__all__ = ["Sweep", "dry_run", "load", "run"]


def run(sweep: Sweep, executor: str, options: ExecutorOptions, job: Job, retry_failed: bool = False
        ) -> tuple[list[RunConfig], int]:
    """Tuning runs (with ``select``), then the final runs; returns the final runs and the failures."""
    groups, labels = expand(sweep)
    plan.check_on_models(every_run(groups))
    failed = 0
    if sweep.select:
        tuning = select.tuning_runs(sweep, groups)
        if tuning:
            print(f"tuning {sweep.select.over}: {len(launch.unique(tuning))} run(s) with "
                  f"{sweep.select.validation} training items per task held out")
            failed += launch.launch(tuning, executor, options, job, retry_failed=retry_failed, labels=labels)
        choices = select.choose(sweep, job.out, groups)
        print(select.selection_table(sweep, choices))
        print(f"selection written to {select.write_selection(sweep, job.out, choices)}")
        finals = select.finals(groups, choices)
    else:
        finals = every_run(groups)
    print(f"final runs: {len(launch.unique(finals))}")
    failed += launch.launch(finals, executor, options, job, retry_failed=retry_failed, labels=labels)
    return launch.unique(finals), failed


def dry_run(sweep: Sweep, out: Path, retry_failed: bool = False) -> str:
    """Every run of the sweep with its status in ``out`` and what a submission would do with it."""
    groups, labels = expand(sweep)
    if not sweep.select:
        return "\n".join(launch.listing("runs", every_run(groups), out, retry_failed, labels))
    choices = select.choose(sweep, out, groups)
    pending = sum(not c.decided for c in choices)
    return "\n".join([
        *launch.listing(f"tuning runs ({sweep.select.over})", select.tuning_runs(sweep, groups), out, retry_failed,
                        labels),
        select.selection_table(sweep, choices),
        *launch.listing(f"final runs (decided so far; {pending} group(s) wait for tuning)",
                        select.finals(groups, choices), out, retry_failed, labels),
    ])
