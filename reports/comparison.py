"""The comparison block: every method against a reference method, with its uncertainty.

Printed at the end of ``bench run`` / ``bench sweep`` with two or more methods, so the first
numbers a reader sees already say whether a difference is real:

* accuracy, per task: the paired difference B - A on the same test items with a 95% paired
  bootstrap interval and McNemar's exact p on the discordant (item, seed) pairs; each item's
  correctness is averaged over the seeds both methods ran (``reports.stats``: seeds never count
  as extra items);
* accuracy over the suite: the difference of the task-averaged accuracies (the tables' Avg),
  its interval from a bootstrap that resamples items within each task (stratified, so every
  resample keeps every task), and McNemar's test on the discordant pairs of all tasks pooled;
* the per-task p-values of one method against the reference form one family: Holm-Bonferroni
  adjusts them for the number of tasks tested (eight tests at 0.05 would find a "difference"
  on some task a third of the time by chance alone); the suite row is one test of its own;
* "no significant difference at this budget" wherever the adjusted p >= 0.05: at this many steps
  and test items the data cannot tell the methods apart, which is a result, not a tie broken by
  digits; "better"/"worse" only where the adjusted p < 0.05;
* tasks on which the base model is not above chance (``reports.chance``) are marked ``‡``: a
  difference there can be a shift of guessing bias (say, answering "yes" more often), not a skill;
* costs: step time and peak memory of B over A (ratio of medians) with each side's p10-p90
  beside it, so a ratio inside the spread of either side reads as such.

Everything here is a pure function of arrays; ``reports.stats`` holds the tests themselves.
"""
from __future__ import annotations

import dataclasses
import statistics
from dataclasses import dataclass, field
from typing import Collection, Sequence

import numpy as np

from harness.measure import percentile
from reports.stats import ALPHA, BOOTSTRAP_ITERS, holm, mcnemar_exact

SUITE = "all tasks"
NO_DIFFERENCE = "no significant difference at this budget"


@dataclass(frozen=True)
class Paired:
    """One task: methods A and B right (1) or wrong (0) on the same items, arrays items x seeds."""

    task: str
    a: np.ndarray
    b: np.ndarray
    seeds: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.a.shape != self.b.shape or self.a.ndim != 2 or self.a.shape[0] == 0:
            raise ValueError(f"{self.task}: A and B need the same non-empty items x seeds shape, "
                             f"got {self.a.shape} and {self.b.shape}")


@dataclass(frozen=True)
class Difference:
    """B - A in accuracy (fractions) on one task or over the suite, with its tests."""

    task: str
    acc_a: float
    acc_b: float
    diff: float
    low: float  # 95% bootstrap interval of diff
    high: float
    p_value: float  # McNemar exact, two-sided
    items: int
    seeds: tuple[int, ...]
    discordant: tuple[int, int]  # (A right & B wrong, A wrong & B right) over (item, seed)
    p_adjusted: float | None = None  # Holm over the tasks tested together (``corrected``); None: a test on its own

    @property
    def p_decisive(self) -> float:
        """The p the verdict reads: adjusted for the tasks tested together, where it was."""
        return self.p_value if self.p_adjusted is None else self.p_adjusted

    @property
    def significant(self) -> bool:
        return self.p_decisive < ALPHA

    def verdict(self, a: str, b: str) -> str:
        if not self.significant:
            return NO_DIFFERENCE
        return f"{b} {'better' if self.diff > 0 else 'worse'} than {a}"


def bootstrap_mean(groups: Sequence[np.ndarray], iters: int = BOOTSTRAP_ITERS, seed: int = 0,
                   confidence: float = 1 - ALPHA) -> tuple[float, float, float]:
    """(mean of the group means, low, high): percentile interval, items resampled within each group.

    With one group this is ``reports.stats.paired_bootstrap`` on the differences (same draws).
    Resampling within groups keeps every task in every resample, so the interval is that of the
    task average the tables print, not of one item pool dominated by the largest task.
    """
    if not groups or any(len(g) == 0 for g in groups):
        raise ValueError("every group needs items")
    rng = np.random.default_rng(seed)
    draws = [np.asarray(g, dtype=float)[rng.integers(0, len(g), size=(iters, len(g)))].mean(axis=1)
             for g in groups]
    means = np.mean(draws, axis=0)
    tail = (1 - confidence) / 2
    point = float(np.mean([np.mean(g) for g in groups]))
    return point, float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def _discordant(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    return int(((a == 1) & (b == 0)).sum()), int(((a == 0) & (b == 1)).sum())


def difference(p: Paired) -> Difference:
    """One task's paired comparison."""
    diff, low, high = bootstrap_mean([p.b.mean(axis=1) - p.a.mean(axis=1)])
    only_a, only_b = _discordant(p.a, p.b)
    return Difference(p.task, float(p.a.mean()), float(p.b.mean()), diff, low, high,
                      mcnemar_exact(only_a, only_b), p.a.shape[0], p.seeds, (only_a, only_b))


def corrected(per_task: Sequence[Difference]) -> list[Difference]:
    """The per-task differences of one method against the reference, each with its Holm-adjusted p
    over all of them (the family is the tasks tested at once)."""
    adjusted = holm([d.p_value for d in per_task])
    return [dataclasses.replace(d, p_adjusted=q) for d, q in zip(per_task, adjusted)]


def suite_difference(tasks: Sequence[Paired]) -> Difference:
    """Over the suite: difference of task-averaged accuracies, stratified bootstrap, pooled McNemar."""
    if not tasks:
        raise ValueError("no tasks")
    diff, low, high = bootstrap_mean([p.b.mean(axis=1) - p.a.mean(axis=1) for p in tasks])
    pairs = [_discordant(p.a, p.b) for p in tasks]
    only_a, only_b = sum(x for x, _ in pairs), sum(y for _, y in pairs)
    seeds = tuple(s for s in tasks[0].seeds if all(s in p.seeds for p in tasks))
    return Difference(SUITE, float(np.mean([p.a.mean() for p in tasks])), float(np.mean([p.b.mean() for p in tasks])),
                      diff, low, high, mcnemar_exact(only_a, only_b), sum(p.a.shape[0] for p in tasks), seeds,
                      (only_a, only_b))


# -- costs -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Spread:
    """Median and p10-p90 of a set of measurements (timed steps, or one peak per run)."""

    median: float
    p10: float
    p90: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> "Spread":
        vals = [float(v) for v in values]
        if not vals:
            raise ValueError("no values")
        return cls(statistics.median(vals), percentile(vals, 10), percentile(vals, 90), len(vals))


@dataclass(frozen=True)
class CostRatio:
    """One cost of B over A: the ratio of medians, with both sides' spreads kept beside it."""

    name: str
    unit: str
    a: Spread
    b: Spread
    flagged: bool = False  # measured while the machine was busier than its cores (harness.machineload)

    @property
    def ratio(self) -> float:
        return self.b.median / self.a.median if self.a.median else float("nan")


@dataclass
class VsBaseline:
    """Everything the block prints for one method against the reference."""

    label: str
    differences: list[Difference]  # per task, then the suite
    costs: list[CostRatio] = field(default_factory=list)


def _pts(x: float) -> str:
    return f"{100 * x:+.1f}"


def _spread(s: Spread, unit: str) -> str:
    scale, digits = (1 / 2**30, 2) if unit == "bytes" else (1.0, 3)
    shown = "GiB" if unit == "bytes" else unit
    text = f"{s.median * scale:.{digits}f} {shown}"
    if s.n > 1:
        text += f" (p10-p90 {s.p10 * scale:.{digits}f}-{s.p90 * scale:.{digits}f}, n={s.n})"
    return text


def format_block(baseline: str, rows: list[VsBaseline], metric: str = "acc",
                 near_chance: Collection[str] = ()) -> str:
    """The plain-text block: a difference table per method, its cost ratios, and the notes.
    ``near_chance``: tasks whose base model is not above chance, marked ``‡``."""
    header = ["method", "task", f"{baseline} {metric}%", f"method {metric}%", "diff (pts)", "95% CI (pts)",
              "McNemar p", "Holm p", "items x seeds", "verdict"]
    body = []
    for row in rows:
        for d in row.differences:
            body.append([row.label, d.task + ("‡" if d.task in near_chance else ""), f"{100 * d.acc_a:.1f}",
                         f"{100 * d.acc_b:.1f}", _pts(d.diff), f"[{_pts(d.low)}, {_pts(d.high)}]",
                         f"{d.p_value:.3g}", "-" if d.p_adjusted is None else f"{d.p_adjusted:.3g}",
                         f"{d.items} x {len(d.seeds)}", d.verdict(baseline, row.label)])
    widths = [max(len(x) for x in col) for col in zip(header, *body)]
    fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    lines = [f"comparison against {baseline} (the reference; --baseline NAME picks another)",
             fmt(header), fmt(["-" * w for w in widths]), *map(fmt, body)]
    for row in rows:
        for c in row.costs:
            flag = " [FLAGGED: machine busier than its cores]" if c.flagged else ""
            lines.append(f"{row.label} / {baseline} {c.name}: x{c.ratio:.2f}  ({row.label} {_spread(c.b, c.unit)}; "
                         f"{baseline} {_spread(c.a, c.unit)}){flag}")
    lines.append(f"diff = method - {baseline} on the same test items, each item averaged over the seeds both ran; "
                 f"95% CI: paired bootstrap over items ({BOOTSTRAP_ITERS:,} resamples; '{SUITE}': task average, "
                 f"items resampled within each task); McNemar: exact two-sided test on the discordant (item, seed) "
                 f"pairs; Holm p: McNemar's p adjusted by Holm-Bonferroni for the number of tasks tested against "
                 f"{baseline} ('{SUITE}' is one test, unadjusted); 'better'/'worse' only where that p < {ALPHA:g}; "
                 f"cost ratios: medians, spreads p10-p90 over timed steps (step time) or runs (memory)")
    if any(d.task in near_chance for row in rows for d in row.differences):
        lines.append("‡ base model not above chance on this task (CHANCE LEVEL above): a difference there may be a "
                     "shift in guessing bias, not a learned skill")
    return "\n".join(lines)
