"""Forgetting figures (MEASUREMENT.md, "Forgetting"), as pure functions of accuracies.

The only place they are computed: the driver records them and reports call these functions
for runs that did not record one.

``R[i][j]`` is the accuracy on task j after stage i (stages and tasks 0-based, one stage per
task in sequence order, so ``R[j][j]`` is task j right after training on it).
"""
from __future__ import annotations

from typing import Iterable, Sequence


def retention_forgetting(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Per task ``acc_before - acc_after`` (positive means lost)."""
    return {task: before[task] - after[task] for task in before if task in after}


def mean_forgetting(per_task: Iterable[float]) -> float:
    """One figure per run from per-task forgetting: the retention mean, a sequence's mean."""
    values = list(per_task)
    return sum(values) / len(values)


def final_average(R: Sequence[Sequence[float]]) -> float:
    """Mean accuracy over all tasks after the last stage."""
    return sum(R[-1]) / len(R[-1])


def backward_transfer(R: Sequence[Sequence[float]]) -> float:
    """BWT = mean over j < n of (R[n][j] - R[j][j]); negative means earlier tasks were forgotten."""
    n = len(R) - 1
    if n == 0:
        return 0.0
    return sum(R[n][j] - R[j][j] for j in range(n)) / n


def sequential_forgetting(R: Sequence[Sequence[float]]) -> list[float]:
    """Per task j < n: ``max_{i<n} R[i][j] - R[n][j]`` (the last task has none)."""
    n = len(R) - 1
    return [max(R[i][j] for i in range(n)) - R[n][j] for j in range(n)]
