"""The comparison block on runs with known per-item outcomes: differences, intervals, p, costs, flags."""
from __future__ import annotations

import math

import numpy as np
import pytest

from reports import block, comparison, stats
from tests import factories
from reports.comparison import NO_DIFFERENCE, SUITE, Paired
from reports.load import load_results


def outcomes(both: int, only_a: int, only_b: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    """Items x 1 seed with a hand-built 2x2 table of (A right?, B right?) counts."""
    a = [1] * both + [1] * only_a + [0] * only_b + [0] * neither
    b = [1] * both + [0] * only_a + [1] * only_b + [0] * neither
    return np.array(a, float)[:, None], np.array(b, float)[:, None]


def test_difference_on_a_hand_built_table():
    a, b = outcomes(10, 2, 10, 18)  # 40 items; B gains 10, loses 2
    d = comparison.difference(Paired("arc_e", a, b, (0,)))
    # McNemar: 2 * P(X <= 2 | n=12, 1/2) = 2 * (1 + 12 + 66) / 4096
    assert d.p_value == pytest.approx(2 * 79 / 4096) and d.significant
    assert (d.acc_a, d.acc_b, d.diff, d.discordant, d.items) == (0.3, 0.5, pytest.approx(0.2), (2, 10), 40)
    # per-item differences: sd sqrt(12/40 - 0.04) = 0.51, so the interval is about 0.2 +- 1.96 * 0.51 / sqrt(40)
    assert d.low == pytest.approx(0.2 - 0.158, abs=0.03) and d.high == pytest.approx(0.2 + 0.158, abs=0.03)
    assert d.verdict("lora", "losia") == "losia better than lora"


def test_small_difference_is_said_in_words():
    a, b = outcomes(20, 3, 5, 12)
    d = comparison.difference(Paired("boolq", a, b, (0,)))
    assert d.p_value == pytest.approx(2 * (1 + 8 + 28 + 56) / 256)  # 2 * P(X <= 3 | n=8)
    assert d.low < 0 < d.high and d.verdict("lora", "losia") == NO_DIFFERENCE


def test_seeds_pool_items_not_count_as_items():
    a1, b1 = outcomes(10, 0, 6, 24)
    two = Paired("piqa", np.hstack([a1, a1]), np.hstack([b1, b1]), (0, 1))
    d = comparison.difference(two)
    assert d.items == 40 and d.seeds == (0, 1) and d.discordant == (0, 12)
    assert d.p_value == pytest.approx(2 / 2**12)  # discordant (item, seed) pairs: 12, all one way
    one = comparison.difference(Paired("piqa", a1, b1, (0,)))
    assert (d.diff, d.low, d.high) == (one.diff, one.low, one.high)  # same per-item means: same interval


def test_bootstrap_mean_one_group_is_the_paired_bootstrap():
    rng = np.random.default_rng(3)
    a, b = rng.integers(0, 2, 50), rng.integers(0, 2, 50)
    assert comparison.bootstrap_mean([b - a]) == pytest.approx(stats.paired_bootstrap(a, b))


def test_suite_difference_averages_tasks_and_pools_discordant_pairs():
    t1 = Paired("boolq", *outcomes(10, 0, 10, 20), (0,))  # +25 points on 40 items
    t2 = Paired("obqa", *outcomes(8, 0, 0, 12), (0,))  # the same outcomes on 20 items: 0 points
    d = comparison.suite_difference([t1, t2])
    assert d.task == SUITE and d.diff == pytest.approx((0.25 + 0.0) / 2)  # task average, not item pool (1/6)
    assert d.discordant == (0, 10) and d.items == 60
    assert d.p_value == pytest.approx(stats.mcnemar_exact(0, 10))
    assert d.acc_a == pytest.approx((0.25 + 0.4) / 2) and d.acc_b == pytest.approx((0.5 + 0.4) / 2)
    # stratified: obqa's differences are all 0, so the interval is boolq's halved by the average
    only = comparison.difference(t1)
    assert d.low == pytest.approx(only.low / 2, abs=0.02) and d.high == pytest.approx(only.high / 2, abs=0.02)


def test_interval_covers_the_true_difference_about_95_percent_of_the_time():
    rng = np.random.default_rng(0)
    covered, trials = 0, 300
    for k in range(trials):  # A right with p 0.6, B with 0.7, independent: true difference +0.1
        a, b = (rng.random(150) < 0.6).astype(float), (rng.random(150) < 0.7).astype(float)
        _, low, high = comparison.bootstrap_mean([b - a], iters=1000, seed=k)
        covered += low <= 0.1 <= high
    assert 0.91 <= covered / trials <= 0.98


def test_spread_and_ratio():
    s = comparison.Spread.of([1.0, 2.0, 3.0, 4.0, 5.0])
    assert (s.median, s.p10, s.p90, s.n) == (3.0, 1.4, 4.6, 5)
    r = comparison.CostRatio("step time", "s", comparison.Spread.of([2.0]), s)
    assert r.ratio == 1.5


# -- from run folders --------------------------------------------------------------------------

def write_run(root, method: str, seed: int, per_task: dict[str, list[int]], step_s: float = 0.1,
              rss: float = 2**30, load: float | None = None) -> str:
    run_id = f"m__{method}__s{seed}"
    evals = [factories.evaluation(t, p, float(np.mean(c)), n=len(c), chance=0.25)
             for t, c in per_task.items() for p in ("before", "after")]
    rec = factories.record(run_id, method=method, seed=seed, train_tasks=per_task, train={"timing_warmup_steps": 2},
                           evals=evals, costs={"step_time_s": step_s, "peak_rss_bytes": rss},
                           load={"cpu_count": 2, "start": {"load1": load}, "end": {"load1": 1.0}} if load else None)
    steps = [{"step": i, "step_time_s": 9.0 if i < 2 else step_s * (1 + 0.1 * (i % 3)), "profiled": i == 1}
             for i in range(8)]
    samples = {(p, t): [{"id": f"test-{i}", "correct": bool(x)} for i, x in enumerate(c)]
               for t, c in per_task.items() for p in ("before", "after")}
    factories.write(root, rec, samples, steps)
    return run_id


def test_block_from_run_folders(tmp_path):
    a_boolq, b_boolq = outcomes(10, 2, 10, 18)
    a_obqa, b_obqa = outcomes(20, 3, 5, 12)
    write_run(tmp_path, "lora", 0, {"boolq": a_boolq[:, 0], "obqa": a_obqa[:, 0]}, step_s=0.1)
    write_run(tmp_path, "losia", 0, {"boolq": b_boolq[:, 0], "obqa": b_obqa[:, 0]}, step_s=0.2, rss=2**31, load=5.0)
    res = load_results([tmp_path])
    base, (row,) = block.compare_runs(res, order=["losia", "lora"])
    assert base == "losia" and row.label == "lora"  # the first listed is the reference
    base, (row,) = block.compare_runs(res, baseline="lora", order=["losia", "lora"])
    assert base == "lora" and [d.task for d in row.differences] == ["boolq", "obqa", SUITE]
    assert row.differences[0].p_value == pytest.approx(2 * 79 / 4096)
    # two tasks tested at once: Holm doubles the smaller p, which no longer passes 0.05
    assert row.differences[0].p_adjusted == pytest.approx(2 * 2 * 79 / 4096) and not row.differences[0].significant
    assert row.differences[2].p_adjusted is None  # the suite row is one test of its own
    assert row.differences[2].discordant == (5, 15)
    step, mem = row.costs
    # timed steps: 2 warm-up steps and the profiled step 1 left out, 6 steps of 0.1/0.11/0.12 x scale
    assert step.a.n == 6 and step.ratio == pytest.approx(2.0) and step.flagged
    assert mem.ratio == pytest.approx(2.0) and not math.isnan(mem.ratio)
    text = block.comparison_block(res, baseline="lora")
    assert "comparison against lora" in text and NO_DIFFERENCE in text and "losia better than lora" in text
    assert "x2.00" in text and "FLAGGED" in text and "McNemar" in text and "Holm-Bonferroni" in text
    boolq_line = next(line for line in text.splitlines() if line.startswith("losia   boolq"))
    assert NO_DIFFERENCE in boolq_line and "0.0386" in boolq_line and "0.0771" in boolq_line
    # boolq's base (lora's before: 12/40) has an exact interval that contains chance 0.25: marked
    assert "boolq‡" in text and "‡ base model not above chance" in text and "obqa‡" not in text


def test_holm_adjusts_in_input_order_monotone_and_capped():
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert stats.holm([0.5, 0.6]) == pytest.approx([1.0, 1.0]) and stats.holm([]) == []
    assert stats.holm([0.02]) == pytest.approx([0.02])


def test_one_task_of_eight_below_005_alone_is_no_difference_after_holm():
    """The new user's case: B wins on one small task at p ~ 0.02 and ties on seven more."""
    win = Paired("boolq", *outcomes(5, 0, 6, 9), (0,))  # 20 items, B gains 6: p = 2/64
    ties = [Paired(f"t{k}", *outcomes(10, 1, 1, 8), (0,)) for k in range(7)]
    plain = [comparison.difference(p) for p in [win, *ties]]
    assert plain[0].significant and plain[0].verdict("a", "b") == "b better than a"
    fixed = comparison.corrected(plain)
    assert fixed[0].p_adjusted == pytest.approx(8 * 2 / 64) and fixed[0].verdict("a", "b") == NO_DIFFERENCE
    text = comparison.format_block("a", [comparison.VsBaseline("b", fixed)], near_chance={"boolq"})
    assert "boolq‡" in text and "b better" not in text and "0.25" in text


def test_block_says_why_when_there_is_nothing_to_compare(tmp_path):
    a, _ = outcomes(10, 2, 10, 18)
    write_run(tmp_path, "lora", 0, {"boolq": a[:, 0]})
    assert block.comparison_block(load_results([tmp_path])) == "no comparison: a comparison needs two or more methods"
