"""Uncertainty of accuracies: across seeds, and between two methods on the same items.

* Across seeds: mean, sample standard deviation and a 95% confidence interval for the mean from
  the t-distribution with n-1 degrees of freedom (harness/MEASUREMENT.md, "Quality").
* Between methods A and B on the same test items: the paired difference B - A, a paired
  bootstrap interval (items resampled with replacement; an item's correctness is first
  averaged over the seeds both methods ran, so seeds never count as extra items), and
  McNemar's exact test on the discordant (item, seed) pairs: B right where A is wrong vs the
  reverse, two-sided binomial with p = 1/2. Per-item pairing is what makes a small difference
  detectable: the items both methods find easy or impossible cancel out.

``compare_methods`` reads run folders (``bench compare``) and refuses to pair evaluations
measured differently (protocol, backend, prompt, data, test-set size).
"""
from __future__ import annotations

import dataclasses

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from harness.metrics import final_phase
from harness.schema.settings import MEASURED_BY
from harness.records import read_jsonl, samples_path
from reports.load import ReportError, Run, load_results

ALPHA = 0.05
BOOTSTRAP_ITERS = 10_000


@dataclass(frozen=True)
class SeedSummary:
    mean: float
    std: float | None  # sample std (ddof=1); None for one seed
    low: float | None  # 95% t-interval for the mean; None for one seed
    high: float | None
    n: int


def seed_summary(values: Sequence[float], confidence: float = 1 - ALPHA) -> SeedSummary:
    """Mean, std and t-interval of one figure across seeds."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("no values")
    if x.size == 1:
        return SeedSummary(float(x[0]), None, None, None, 1)
    from scipy.stats import t

    std = float(x.std(ddof=1))
    half = float(t.ppf(0.5 + confidence / 2, x.size - 1)) * std / math.sqrt(x.size)
    return SeedSummary(float(x.mean()), std, float(x.mean()) - half, float(x.mean()) + half, int(x.size))


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts b (A right, B wrong) and c."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input order: the family-wise error over all the
    tests stays at most the level when each adjusted p is read against it. Sorted ascending,
    the k-th smallest (0-based) of m is multiplied by m - k, kept monotone and capped at 1."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted = [1.0] * len(p_values)
    running = 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - k) * p_values[i]))
        adjusted[i] = running
    return adjusted


def paired_bootstrap(a: Sequence[float], b: Sequence[float], iters: int = BOOTSTRAP_ITERS, seed: int = 0,
                     confidence: float = 1 - ALPHA) -> tuple[float, float, float]:
    """(mean of b - a, low, high): percentile interval over item resamples."""
    diff = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
    if diff.size == 0:
        raise ValueError("no paired items")
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, diff.size, size=(iters, diff.size))].mean(axis=1)
    tail = (1 - confidence) / 2
    return float(diff.mean()), float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


@dataclass(frozen=True)
class Comparison:
    """One task: each method across seeds, their paired difference, and the tests."""

    task: str
    a: SeedSummary
    b: SeedSummary
    diff: float  # B - A, items averaged over the paired seeds
    low: float
    high: float
    p_value: float  # McNemar exact
    items: int
    seeds: list[int]
    discordant: tuple[int, int]  # (A right & B wrong, A wrong & B right), over (item, seed)
    trained_on: str = ""  # the training tasks of the compared runs ("+"-joined)

    @property
    def significant(self) -> bool:
        return self.p_value < ALPHA


# -- reading run folders -----------------------------------------------------------------------

def pick_runs(runs: list[Run], who: str) -> list[Run]:
    """Runs of one method: by report label (a variant), else by method name when it has one variant."""
    chosen = [r for r in runs if r.label == who]
    if chosen:
        return chosen
    chosen = [r for r in runs if r.config.get("method") == who]
    labels = sorted({r.label for r in chosen})
    if len(labels) > 1:
        raise ReportError(f"method {who!r} has several variants; name one: {'; '.join(labels)}")
    if not chosen:
        have = sorted({r.label for r in runs})
        raise ReportError(f"no finished runs of {who!r}; found: {', '.join(have) or 'none'}")
    return chosen


def evaluation(run: Run, task: str, phase: str | None) -> tuple[dict, dict[str, dict]] | None:
    """(eval summary, id -> sample) of one task in one run, or None when it was not evaluated."""
    phase = phase or final_phase(e["phase"] for e in run.record.get("evals", []))
    ev = next((e for e in run.record.get("evals", []) if e["task"] == task and e["phase"] == phase), None)
    path = samples_path(run.path, phase, task)
    if ev is None or not path.is_file():
        return None
    return ev, {str(s["id"]): s for s in read_jsonl(path) if "id" in s}


@dataclass(frozen=True)
class PairedGrid:
    """One task's outcomes of A and B on the items and seeds both have: arrays items x seeds."""

    task: str
    ids: list[str]
    seeds: list[int]
    a: np.ndarray
    b: np.ndarray


def paired_grid(runs_a: list[Run], runs_b: list[Run], name: str, phase: str | None = None,
                metric: str = "acc", who: tuple[str, str] = ("A", "B")) -> PairedGrid | None:
    """A's and B's per-item outcomes on task ``name``, paired by seed; None when nothing pairs.

    A run's partner has the same seed and the same training tasks (with --per-task each task
    has its own run); two evaluations measured differently (``MEASURED_BY``, test-set size)
    are refused, never paired.
    """
    a, b = who
    key = "correct" if metric == "acc" else "correct_norm"
    per_seed: dict[int, tuple[dict[str, dict], dict[str, dict]]] = {}
    trained_on: dict[int, object] = {}
    setting = None
    for ra in runs_a:
        partners = [r for r in runs_b if r.config.get("seed") == ra.config.get("seed")
                    and r.config.get("train_tasks") == ra.config.get("train_tasks")]
        if not partners:
            continue
        rb = partners[0]
        got = [evaluation(r, name, phase) for r in (ra, rb)]
        if None in got:
            continue
        (ea, sa), (eb, sb) = got  # type: ignore[misc]
        seed = int(ra.config.get("seed", 0))
        if seed in per_seed and trained_on[seed] != ra.config.get("train_tasks"):
            raise ReportError(f"{name}: several runs of {a} with seed {seed} evaluate it (trained on "
                              f"{trained_on[seed]} and {ra.config.get('train_tasks')}); compare one setting "
                              f"per results folder")
        trained_on[seed] = ra.config.get("train_tasks")
        how = [tuple(str(r.rec.measured_by(e).get(f)) for f in MEASURED_BY) for e, r in ((ea, ra), (eb, rb))]
        if how[0] != how[1] or (setting is not None and setting != how[0]):
            raise ReportError(f"{name}: {a} and {b} were evaluated differently "
                              f"({', '.join(MEASURED_BY)}: {how[0]} vs {how[1]}); not paired")
        setting = how[0]
        per_seed[seed] = (sa, sb)
    if not per_seed:
        return None
    ids = sorted(set.intersection(*(set(sa) & set(sb) for sa, sb in per_seed.values())))
    if not ids or any(key not in s[ids[0]] for pair in per_seed.values() for s in pair):
        return None
    seeds = sorted(per_seed)
    grid_a, grid_b = (np.array([[float(per_seed[s][k][i][key]) for s in seeds] for i in ids]) for k in (0, 1))
    return PairedGrid(name, ids, seeds, grid_a, grid_b)


def compare_methods(results: Path, a: str, b: str, task: str | None = None, phase: str | None = None,
                    metric: str = "acc") -> list[Comparison]:
    """Paired comparison of methods ``a`` and ``b`` per task, over the seeds both ran.

    A task evaluated by runs trained on different tasks (a ``--per-task`` grid with retention
    tasks: boolq as its own task, and as a retention task of the arc_e runs) is compared once per
    training setting, never pooled across them.
    """
    res = load_results([Path(results)])
    runs = {who: pick_runs(res.ok_runs(), who) for who in (a, b)}
    tasks = [t for t in dict.fromkeys(e["task"] for r in runs[a] for e in r.record.get("evals", []))
             if task in (None, t)]
    trainings = list(dict.fromkeys(tuple(r.config.get("train_tasks", ())) for r in runs[a]))
    out = []
    for name in tasks:
        for trained in trainings:
            group = [r for r in runs[a] if tuple(r.config.get("train_tasks", ())) == trained]
            grid = paired_grid(group, runs[b], name, phase, metric, (a, b))
            if grid is None:
                continue
            diff, low, high = paired_bootstrap(grid.a.mean(axis=1), grid.b.mean(axis=1))
            only_a = int(((grid.a == 1) & (grid.b == 0)).sum())
            only_b = int(((grid.a == 0) & (grid.b == 1)).sum())
            out.append(Comparison(name, seed_summary(grid.a.mean(axis=0)), seed_summary(grid.b.mean(axis=0)),
                                  diff, low, high, mcnemar_exact(only_a, only_b), len(grid.ids), grid.seeds,
                                  (only_a, only_b), trained_on="+".join(trained)))
    if not out:
        raise ReportError(f"no task evaluated on the same items by both {a} and {b}"
                          + (f" (task {task})" if task else ""))
    return out


def _summary(s: SeedSummary) -> str:
    text = f"{100 * s.mean:.1f}"
    if s.std is not None:
        text += f"±{100 * s.std:.1f} [{100 * s.low:.1f}, {100 * s.high:.1f}]"  # type: ignore[operator]
    return text


def format_comparison(rows: list[Comparison], a: str, b: str, metric: str = "acc") -> str:
    """A plain-text table: per task A, B (mean±std [t 95% CI] over seeds), B-A with its paired
    bootstrap 95% CI, McNemar p and whether it is significant at 0.05."""
    header = ["task", "trained on", f"{a} {metric}%", f"{b} {metric}%", "B-A (pts)", "95% CI (paired bootstrap)",
              "McNemar p", "A+B-/A-B+", "items", "seeds", "sig. at 0.05"]
    body = [[r.task, r.trained_on or "-", _summary(r.a), _summary(r.b), f"{100 * r.diff:+.1f}", f"[{100 * r.low:+.1f}, {100 * r.high:+.1f}]",
             f"{r.p_value:.3g}", f"{r.discordant[0]}/{r.discordant[1]}", str(r.items),
             ",".join(map(str, r.seeds)), "yes" if r.significant else "no"] for r in rows]
    widths = [max(len(x) for x in col) for col in zip(header, *body)]
    fmt = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    notes = (f"B = {b}, A = {a}; per method: mean±std [95% t-interval] across seeds (one seed: mean only); "
             f"the difference averages each item over the paired seeds; McNemar's exact test counts discordant "
             f"(item, seed) pairs")
    return "\n".join([fmt(header), fmt(["-" * w for w in widths]), *map(fmt, body), notes])
