"""What a table cell or a plotted point knows about its own uncertainty, read from run folders.

An accuracy cell pools the runs (seeds) of one (model, method label) on one task; its evidence
is the per-item outcome grid (items x seeds, ``significance.Items``) from the samples the runs
kept, restricted to the items every seed evaluated. The same grids give

* the tables' significance marks (``significance.mark_column``: McNemar on shared items), and
* the error bars: a 95% bootstrap interval over items of each item's seed-averaged correctness
  (``comparison.bootstrap_mean``), for one task or, resampling within each task, for the
  task average (the tables' Avg column and the Pareto plots' y axis).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from harness.measure import timed_steps
from reports.comparison import bootstrap_mean
from reports.load import Results, Run
from reports.significance import Items
from reports.stats import evaluation


DEFAULT_TIMING_WARMUP = 3  # harness.config.TrainConfig.timing_warmup_steps, for records without it


def run_step_times(run: Run) -> list[float]:
    """The run's timed steps (warm-up and profiled steps left out, as in its recorded median)."""
    warmup = int(run.config.get("train", {}).get("timing_warmup_steps", DEFAULT_TIMING_WARMUP))
    times = [float(s["step_time_s"]) for s in run.steps if "step_time_s" in s]
    return [times[i] for i in timed_steps(len(times), warmup, {i for i, s in enumerate(run.steps) if s.get("profiled")})]


def method_items(runs: Sequence[Run], task: str, phase: str | None = None, metric: str = "acc") -> Items | None:
    """The outcome grid of one method's runs (one per seed) on ``task``; None without samples.

    Only runs that trained on ``task`` count, as in the accuracy tables: with ``--per-task`` a
    run trained on another task evaluates this one as a retention task, a different figure.
    """
    key = "correct" if metric == "acc" else "correct_norm"
    per_seed: dict[int, dict[str, float]] = {}
    for run in runs:
        got = evaluation(run, task, phase) if task in run.config.get("train_tasks", []) else None
        if got is None:
            continue
        samples = got[1]
        if samples and all(key in s for s in samples.values()):
            per_seed[int(run.config.get("seed", 0))] = {i: float(s[key]) for i, s in samples.items()}
    if not per_seed:
        return None
    seeds = tuple(sorted(per_seed))
    ids = tuple(sorted(set.intersection(*(set(v) for v in per_seed.values()))))
    if not ids:
        return None
    return Items(ids, seeds, np.array([[per_seed[s][i] for s in seeds] for i in ids]))


def pooled(per_task: dict[str, Items]) -> Items | None:
    """Several tasks as one grid (ids ``task/id``) over the seeds all of them have: the Avg's evidence."""
    if not per_task:
        return None
    seeds = tuple(s for s in next(iter(per_task.values())).seeds if all(s in g.seeds for g in per_task.values()))
    if not seeds:
        return None
    ids = tuple(f"{t}/{i}" for t, g in per_task.items() for i in g.ids)
    grid = np.vstack([g.correct[:, [g.seeds.index(s) for s in seeds]] for g in per_task.values()])
    return Items(ids, seeds, grid)


def interval(per_task: Sequence[Items]) -> tuple[float, float, float]:
    """(accuracy, low, high): the task-averaged accuracy and its 95% bootstrap interval over items."""
    return bootstrap_mean([g.correct.mean(axis=1) for g in per_task])


def accuracy_evidence(res: Results, tasks: Sequence[str], phase: str | None = None,
                      metric: str = "acc") -> dict[tuple[str, str], dict[str, Items]]:
    """(model, label) -> task -> outcome grid, for every finished method that kept samples."""
    groups: dict[tuple[str, str], list[Run]] = {}
    for run in res.ok_runs():
        groups.setdefault((str(run.config.get("model")), run.label), []).append(run)
    out: dict[tuple[str, str], dict[str, Items]] = {}
    for key, runs in groups.items():
        grids = {t: g for t in tasks if (g := method_items(runs, t, phase, metric)) is not None}
        if grids:
            out[key] = grids
    return out
