"""The comparison block read from run folders: which runs pair, and which costs they measured.

``reports.comparison`` computes and prints; this module picks the reference method, pairs each
other method's runs with its runs (``reports.stats.paired_grid``: same seed, same training
tasks, same measurement) and gathers the costs: every timed step of every run for step time
(``harness.measure.timed_steps``, the steps the run's own median was taken over) and one peak
per run for memory (``reports.tables.peak_memory``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from harness.machineload import busier_than_cores
from reports.caveats import caveats, chance_checks
from reports.comparison import (CostRatio, Paired, Spread, VsBaseline, corrected, difference, format_block,
                                suite_difference)
from reports.evidence import run_step_times
from reports.load import ReportError, Results, Run, load_results
from reports.stats import paired_grid, pick_runs
from reports.tables import peak_memory


def _costs(res: Results, base: list[Run], other: list[Run]) -> list[CostRatio]:
    flagged = any(busier_than_cores(r.record.get("load")) for r in [*base, *other])
    out = []
    steps = [[t for r in runs for t in run_step_times(r)] for runs in (base, other)]
    if all(steps):
        out.append(CostRatio("step time", "s", Spread.of(steps[0]), Spread.of(steps[1]), flagged))
    peaks = peak_memory(res.df[res.df.phase == "train"]).groupby("run_id").value.first()
    mem = [[float(peaks[r.run_id]) for r in runs if r.run_id in peaks.index] for runs in (base, other)]
    if all(mem):
        out.append(CostRatio("peak memory", "bytes", Spread.of(mem[0]), Spread.of(mem[1])))
    return out


def compare_runs(res: Results, baseline: str | None = None, order: Sequence[str] = (), metric: str = "acc",
                 run_ids: set[str] | None = None) -> tuple[str, list[VsBaseline]]:
    """(reference label, one ``VsBaseline`` per other method) over the finished runs in ``res``.

    ``order`` (method names or labels, e.g. ``--methods``) orders the methods; the reference is
    ``baseline`` (a method name or label) or else the first method in that order. ``run_ids``
    restricts the comparison to one invocation's runs.
    """
    runs = [r for r in res.ok_runs() if run_ids is None or r.run_id in run_ids]
    rank = {name: i for i, name in enumerate(order)}
    labels = sorted(dict.fromkeys(r.label for r in runs),
                    key=lambda lab: min(rank.get(lab, rank.get(r.config.get("method"), len(rank)))
                                        for r in runs if r.label == lab))
    if len(labels) < 2:
        raise ReportError("a comparison needs two or more methods")
    base_runs = pick_runs(runs, baseline or labels[0])
    base = base_runs[0].label
    tasks = list(dict.fromkeys(t for r in base_runs for t in r.config.get("eval_tasks", [])))
    rows = []
    for label in (lab for lab in labels if lab != base):
        mine = [r for r in runs if r.label == label]
        grids = [paired_grid(base_runs, mine, t, None, metric, (base, label)) for t in tasks]
        paired = [Paired(g.task, g.a, g.b, tuple(g.seeds)) for g in grids if g is not None]
        diffs = corrected([difference(p) for p in paired]) + ([suite_difference(paired)] if len(paired) > 1 else [])
        rows.append(VsBaseline(label, diffs, _costs(res, base_runs, mine)))
    return base, rows


def comparison_block(res: Results, baseline: str | None = None, order: Sequence[str] = (), metric: str = "acc",
                     run_ids: set[str] | None = None) -> str:
    """The printed block; one line saying why when there is nothing to compare."""
    try:
        base, rows = compare_runs(res, baseline, order, metric, run_ids)
    except ReportError as err:
        return f"no comparison: {err}"
    records = [r.record for r in res.ok_runs() if run_ids is None or r.run_id in run_ids]
    near_chance = {task for (_, task), c in chance_checks(records, metric).items() if c.verdict}
    return format_block(base, rows, metric, near_chance)


@dataclass
class EndOfRun:
    """What ``bench run`` / ``bench sweep`` print after their summary table, and the flags it marks."""

    text: str
    busy: set[str] = field(default_factory=set)  # run ids whose step times were measured on a busy machine
    near_chance: set[tuple[str, str]] = field(default_factory=set)  # (model, task): base not above chance


def end_of_run(out: Path, run_ids: set[str], order: Sequence[str] = (), baseline: str | None = None,
               tuned: str | None = None, metric: str = "acc") -> EndOfRun:
    """The caveats (fair budgets, chance level, load) and, with two or more methods, the comparison block."""
    try:
        res = load_results([out])
    except ReportError as err:
        return EndOfRun(f"no caveats or comparison: {err}")
    records = [r.record for r in res.ok_runs() if r.run_id in run_ids]
    text = caveats(records, tuned, metric)
    if len({r.label for r in res.ok_runs() if r.run_id in run_ids}) > 1:
        text += "\n\n" + comparison_block(res, baseline, order, metric, run_ids)
    return EndOfRun(text, {str(r["run_id"]) for r in records if busier_than_cores(r.get("load"))},
                    {k for k, c in chance_checks(records, metric).items() if c.verdict})
