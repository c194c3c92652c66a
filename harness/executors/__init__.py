"""Executors: where runs execute. One interface, several engines; the results look the same.

An executor takes the runs to do and yields ``(RunConfig, record)`` as each one ends, in any
order. Wherever a run executed, it wrote its folder under the shared ``out`` folder
(``driver.run_one``); when the process running it died before it could record an outcome
(killed, out of memory, node lost, job timed out), ``runfolder.settle`` records the run as failed, so
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
from pathlib import Path
from types import ModuleType

from harness.config import ConfigError
from harness.distributed.launch import Ranks
from harness.executors.base import Executor, Job
from harness.export import DEFAULT_SAVE

NAMES = ("local", "inline", "ray", "slurm")


class MissingExtra(ConfigError):
    """An executor's optional package is not installed (a user error: the message says what to install)."""


def job_for(out: Path, device: str, progress: bool, command: str | None, force: bool = False,
            save: str = DEFAULT_SAVE, report_to: tuple[str, ...] = (), ranks: Ranks = Ranks()) -> Job:
    """A submission's shared settings, with the environment a run needs on another node."""
    env = {k: v for k, v in os.environ.items() if k.startswith("PEFT_BENCH_")}
    return Job(out=Path(out).resolve(), device=device, progress=progress, command=command, env=env, force=force,
               save=save, report_to=report_to, ranks=ranks)


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
