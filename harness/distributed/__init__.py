"""One run on several processes (``--nproc``), GPUs and machines, on ``torch.distributed``.

* ``launch``    checks ``--nproc``/``--nnodes`` before anything starts and starts a run's ranks
                with PyTorch's elastic launcher (``python -m torch.distributed.run``)
* ``worker``    what each rank executes: process group, then the driver (rank 0) or ``follower``
* ``team``      the collectives of a data-parallel run: each rank's share of a step's examples,
                the bucketed gradient all-reduce, the per-step figures across ranks, the final
                check that every rank holds the same weights; bytes counted where issued
* ``follower``  the recipe of ranks other than 0: evaluate and train in step with rank 0, write
                nothing

Evaluation batches are shared through ``tasks.sharing`` (``Team`` implements its protocol);
``bench perf --nproc`` measures on every rank (``harness.perf.timing``).

The driver and the trainer see a ``Team`` (or ``None`` in a one-process run) through ``current``:
the one hook point, so that a one-process run is exactly what it was.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # importing this package must not import torch (bench --help stays fast)
    from harness.distributed.team import Team

CONTINUE = "continue"  # rank 0's instruction to the other ranks: go on with the recipe

_CURRENT: Team | None = None


def current() -> Team | None:
    """The team this process belongs to, or None in a one-process run."""
    return _CURRENT


def join(team: Team | None) -> None:
    """Make ``team`` this process's team (the rank worker calls it once, before the run)."""
    global _CURRENT
    _CURRENT = team
