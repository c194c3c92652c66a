"""Executors: where runs execute. One interface, several engines; the results look the same.

An executor takes the runs to do and yields ``(RunConfig, record)`` as each one ends, in any
order. Wherever a run executed, it wrote its folder under the shared ``out`` folder
(``driver.run_one``); when the process running it died before it could record an outcome
(killed, out of memory, node lost, job timed out), ``settle`` records the run as failed here, so
the grid goes on and a resubmission knows what to retry.

* ``local``  one fresh worker process per run, one at a time (clean memory figures)
* ``inline`` this process (tests, debugging)
* ``ray``    each run a Ray task: one GPU, or ``cpus_per_run`` CPUs; a local or existing cluster
* ``slurm``  the runs as a Slurm job array, submitted with submitit

Ray and submitit are optional extras, imported only when their executor is asked for.
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterator, Sequence

from harness import records
from harness.config import ConfigError, RunConfig, run_config_from_dict
from harness.export import DEFAULT_SAVE

NAMES = ("local", "inline", "ray", "slurm")


@dataclass(frozen=True)
class Job:
    """What every run of one submission shares, wherever it executes (picklable, plain values)."""

    out: Path  # the results folder; every node must see it at this path
    device: str  # as given: auto, cpu, cuda, cuda:1 (resolved where the run executes)
    progress: bool = False
    command: str | None = None
    env: dict[str, str] = field(default_factory=dict)  # PEFT_BENCH_* settings (data folder, hub)
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


class MissingExtra(ConfigError):
    """An executor's optional package is not installed (a user error: the message says what to install)."""


def job_for(out: Path, device: str, progress: bool, command: str | None, save: str = DEFAULT_SAVE,
            report_to: tuple[str, ...] = ()) -> Job:
    """A submission's shared settings, with the environment a run needs on another node."""
    env = {k: v for k, v in os.environ.items() if k.startswith("PEFT_BENCH_")}
    return Job(out=Path(out).resolve(), device=device, progress=progress, command=command, env=env, save=save,
               report_to=report_to)


def get(name: str) -> Executor:
    """The executor called ``name``; its optional package is imported here, only when asked for."""
    if name in ("local", "inline"):
        from harness.executors import local

        return local.run_local if name == "local" else local.run_inline
    if name == "ray":
        require("ray", "ray", "ray>=2.9")  # fail before any run, not at the first submission
        from harness.executors.ray_cluster import run_ray

        return run_ray
    if name == "slurm":
        require("submitit", "slurm", "submitit>=1.5")
        from harness.executors.slurm import run_slurm

        return run_slurm
    raise ConfigError(f"unknown executor {name!r}; valid: {', '.join(NAMES)}")


def require(module: str, extra: str, package: str) -> ModuleType:
    """Import an optional dependency, or say in one line which pip command installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise MissingExtra(f"--executor {extra} needs {module}, which is not installed: "
                           f"pip install 'peft-bench[{extra}]' (or pip install '{package}')") from err


def run_resolved(resolved: dict[str, Any], job: Job) -> dict[str, Any]:
    """Execute one run in this process and return its record: the body of every remote task/job."""
    from harness.driver import run_one
    from harness.environment import pick_device

    os.environ.update(job.env)
    device = pick_device(job.device)
    return run_one(run_config_from_dict(resolved), job.out, device, job.progress, job.command, job.save,
                   job.report_to)


def settle(cfg: RunConfig, out: Path, how: str) -> dict[str, Any]:
    """The run's record; a run that left none (or left ``running``) is recorded as failed with ``how``."""
    path = records.run_dir(out, cfg.run_id) / "run.json"
    record = records.read_json(path) if path.exists() else {"run_id": cfg.run_id, "config": cfg.resolved()}
    if record.get("status") not in ("ok", "failed"):
        why = how or f"the run recorded no outcome in {path.parent} (is --out on a filesystem every node shares?)"
        record.update(status="failed", error={"type": "WorkerDied", "message": why})
        records.atomic_write_json(path, record)
    return record
