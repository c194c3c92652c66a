"""Which value in a table column is the best, said only when a test says so.

A bold number in a paper reads as "this method is better". Bolding the largest mean makes that
claim for any difference, however small the test set; here a column's leader is bold only when
it is significantly better than the runner-up, and every value the test cannot separate from
the leader is marked as tied with it (then nothing is bold: there is no single best).

What "significantly" means depends on the evidence a cell has, strongest first:

* ``Items``: per-item outcomes (right/wrong) on the test items, items x seeds. Two cells that
  share items (and seeds) are compared with McNemar's exact test on the discordant (item,
  seed) pairs: the paired test of ``bench compare``.
* ``Seeds``: one value per seed (items differ or were not kept): Welch's t-test across seeds,
  which needs at least two seeds on each side.
* ``Spread``: a median with its p10-p90 over timed steps (step time): different only when the
  two p10-p90 ranges do not overlap, a conservative rule for one run per cell.
* ``Exact``: a deterministic count (parameters, bytes): different whenever the values differ.

Pairs that cannot be tested (one seed each and no items) are reported as untested, and no best
is marked in that column.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Hashable, Union

import numpy as np

from reports.comparison import Spread
from reports.stats import ALPHA, mcnemar_exact

BEST, TIE, UNTESTED = "best", "tie", "untested"
MCNEMAR = "McNemar's exact test on the same items (pooled over seeds)"
WELCH = "Welch's t-test across seeds (items differ)"
NON_OVERLAP = "p10-p90 ranges of step times apart"
EXACT = "exact counts"
FOOTNOTE_START = "bold: "


@dataclass(frozen=True)
class Items:
    """Right (1) / wrong (0) per item and seed; ``ids`` name the rows, ``seeds`` the columns."""

    ids: tuple[str, ...]
    seeds: tuple[int, ...]
    correct: np.ndarray

    def per_seed(self) -> tuple[float, ...]:
        return tuple(float(x) for x in self.correct.mean(axis=0))


@dataclass(frozen=True)
class Seeds:
    values: tuple[float, ...]


@dataclass(frozen=True)
class StepSpread:
    spread: Spread


@dataclass(frozen=True)
class Exact:
    value: float


Evidence = Union[Items, Seeds, StepSpread, Exact]


def shared(a: Items, b: Items) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]] | None:
    """Both outcome grids restricted to the items and seeds they share (and those seeds), or None."""
    seeds = tuple(s for s in a.seeds if s in b.seeds)
    ids = sorted(set(a.ids) & set(b.ids))
    if not seeds or not ids:
        return None
    rows_a, rows_b = {k: i for i, k in enumerate(a.ids)}, {k: i for i, k in enumerate(b.ids)}
    cols_a, cols_b = [a.seeds.index(s) for s in seeds], [b.seeds.index(s) for s in seeds]
    return (a.correct[np.ix_([rows_a[k] for k in ids], cols_a)],
            b.correct[np.ix_([rows_b[k] for k in ids], cols_b)], seeds)


def welch_p(a: tuple[float, ...], b: tuple[float, ...]) -> float | None:
    """Two-sided Welch t-test p; None with fewer than two values a side or no spread at all."""
    if len(a) < 2 or len(b) < 2:
        return None
    if np.std(a) == 0 and np.std(b) == 0:
        return None if np.mean(a) == np.mean(b) else 0.0
    import warnings

    from scipy.stats import ttest_ind

    with warnings.catch_warnings():  # near-identical values: scipy warns, the p it returns is still usable
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(ttest_ind(a, b, equal_var=False).pvalue)
    return None if math.isnan(p) else p


def differs(a: Evidence, b: Evidence) -> tuple[bool | None, str]:
    """(significantly different?, the test used); None when the evidence allows no test."""
    if isinstance(a, Items) and isinstance(b, Items):
        grids = shared(a, b)
        if grids is not None:
            only_a = int(((grids[0] == 1) & (grids[1] == 0)).sum())
            only_b = int(((grids[0] == 0) & (grids[1] == 1)).sum())
            return mcnemar_exact(only_a, only_b) < ALPHA, MCNEMAR
        a, b = Seeds(a.per_seed()), Seeds(b.per_seed())
    if isinstance(a, Seeds) and isinstance(b, Seeds):
        p = welch_p(a.values, b.values)
        return (None if p is None else p < ALPHA), WELCH
    if isinstance(a, StepSpread) and isinstance(b, StepSpread):
        lo, hi = sorted((a.spread, b.spread), key=lambda s: s.median)
        return lo.p90 < hi.p10, NON_OVERLAP
    if isinstance(a, Exact) and isinstance(b, Exact):
        return a.value != b.value, EXACT
    return None, f"no test between {type(a).__name__} and {type(b).__name__}"


def _strength(ev: Evidence | None) -> int:
    if isinstance(ev, Items):
        return 3
    if isinstance(ev, (Exact, StepSpread)):
        return 2
    return 1 if isinstance(ev, Seeds) and len(ev.values) > 1 else 0


def mark_column(values: dict[Hashable, float], evidence: dict[Hashable, Evidence], higher: bool,
                shown: dict[Hashable, str] | None = None) -> tuple[dict[Hashable, str], set[str]]:
    """Marks for one column's candidates (``best`` / ``tie`` / ``untested``) and the tests used.

    Going down the ranking, every candidate the test cannot separate from the leader shares
    ``tie`` with it (``untested`` where no test applies) until the first that is significantly
    worse; the leader is ``best`` only when that is the runner-up.
    ``shown`` (the printed text of each value) makes values that print the same tied without a
    test, and a column where every value prints the same gets no marks: nothing ranks.
    """
    # among equal values the best-evidenced leads, so one single-run row does not make the column untested
    keys = sorted((k for k in values if not math.isnan(values[k])),
                  key=lambda k: ((values[k] if higher else -values[k]), _strength(evidence.get(k))), reverse=True)
    if len(keys) < 2 or (shown is not None and len({shown[k] for k in keys}) == 1):
        return {}, set()
    leader, marks, tests = keys[0], {}, set()
    for other in keys[1:]:
        if shown is not None and shown[other] == shown[leader]:
            marks[other] = TIE
            continue
        result, test = (differs(evidence[leader], evidence[other]) if leader in evidence and other in evidence
                        else (None, ""))
        tests.update({test} - {""})
        if result:
            break  # significantly worse than the leader: so is everything ranked below it
        marks[other] = UNTESTED if result is None else TIE
    if not marks:
        return {leader: BEST}, tests
    return {leader: TIE if TIE in marks.values() else UNTESTED, **marks}, tests


def footnote(tests: set[str]) -> str:
    """The table note that says what bold and the tie mark mean, naming the tests and the level."""
    used = "; ".join(t for t in (MCNEMAR, WELCH, NON_OVERLAP, EXACT) if t in tests) or "no test was possible"
    return (f"{FOOTNOTE_START}the column's best, significantly better than the runner-up ({used}; two-sided, "
            f"level {ALPHA:g}); ≈: not significantly different from the column's leader (a tie: no best "
            f"marked); ?: untested (one run a side and no per-item outcomes)")
