"""What every executor shares: the submission's settings, a run's resources, the body of a run
wherever it executes (a run whose process died is recorded by ``harness.runfolder.settle``).

Kept apart from ``harness.executors`` (which picks an engine by name) so that the engines import
this module, never their own package: no import cycle.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from harness.config import RunConfig, run_config_from_dict
from harness.export import DEFAULT_SAVE


@dataclass(frozen=True)
class Job:
    """What every run of one submission shares, wherever it executes (picklable, plain values)."""

    out: Path  # the results folder; every node must see it at this path
    device: str  # as given: auto, cpu, cuda, cuda:1 (resolved where the run executes)
    progress: bool = False
    command: str | None = None
    env: dict[str, str] = field(default_factory=dict)  # PEFT_BENCH_* settings (data folder, hub)
    force: bool = False  # redo runs that are ok, even one another process finished meanwhile
    save: str = DEFAULT_SAVE  # --save: what each run keeps of its trained model (harness.export)
    report_to: tuple[str, ...] = ()  # --report-to: trackers (harness.trackers)


@dataclass(frozen=True)
class ExecutorOptions:
    """Resources of one run on a cluster; ignored by ``local`` and ``inline``."""

    cpus_per_run: int = 1
    ray_address: str | None = None  # None: $RAY_ADDRESS if set, else a local Ray instance
    slurm_cluster: str | None = None  # None: slurm where sbatch exists, else submitit's local executor
    slurm_partition: str | None = None
    slurm_time_min: int = 60
    slurm_gpus: int = 0  # GPUs per run
    slurm_mem_gb: float | None = None


Finished = Iterator[tuple[RunConfig, dict[str, Any]]]  # each run with its record, as it ends
Executor = Callable[[Sequence[RunConfig], Job, ExecutorOptions], Finished]


def run_resolved(resolved: dict[str, Any], job: Job) -> dict[str, Any]:
    """Execute one run in this process and return its record: the body of every remote task/job."""
    from harness.driver import run_one
    from harness.environment import pick_device

    os.environ.update(job.env)
    device = pick_device(job.device)
    return run_one(run_config_from_dict(resolved), job.out, device, job.progress, job.command, not job.force,
                   job.save, job.report_to)
