"""Best only when significant, ties marked, below-chance tasks and busy machines flagged."""
from __future__ import annotations

import numpy as np
import pytest

from harness import machineload
from reports import chance, significance as sig
from reports.comparison import Spread


def items(correct: list[list[int]], seeds: tuple[int, ...] = (0,), prefix: str = "t") -> sig.Items:
    grid = np.array(correct, dtype=float).reshape(len(correct), len(seeds))
    return sig.Items(tuple(f"{prefix}{i}" for i in range(len(correct))), seeds, grid)


def test_leader_significantly_better_is_best():
    a = items([[1]] * 30 + [[0]] * 10)  # 75%
    b = items([[1]] * 20 + [[0]] * 20)  # 50%: A right on 10 items B gets wrong, never the reverse
    assert sig.differs(a, b) == (True, sig.MCNEMAR)  # p = 2 / 2^10
    marks, tests = sig.mark_column({"losia": 0.75, "lora": 0.5}, {"losia": a, "lora": b}, higher=True)
    assert marks == {"losia": sig.BEST} and tests == {sig.MCNEMAR}


def test_the_issues_example_is_a_tie():
    """2 seeds x 16 items, 68.8 vs 59.4: McNemar p = 0.375 (the issue's bench compare), so no bold."""
    a = np.zeros((16, 2))
    a[:11] = 1  # 68.8% on each seed
    b = a.copy()
    b[[0, 1], 0] = 0  # B wrong where A is right: 4 (item, seed) pairs
    b[[0, 1], 1] = 0
    b[11, 0] = 1  # and right where A is wrong: 1 pair
    A, B = sig.Items(tuple(map(str, range(16))), (0, 1), a), sig.Items(tuple(map(str, range(16))), (0, 1), b)
    from reports.stats import mcnemar_exact

    assert mcnemar_exact(4, 1) == pytest.approx(0.375) and b.mean() == pytest.approx(0.59375)
    marks, _ = sig.mark_column({"losia-pro": a.mean(), "lora": b.mean()}, {"losia-pro": A, "lora": B}, higher=True)
    assert marks == {"losia-pro": sig.TIE, "lora": sig.TIE}


def test_items_differ_then_seeds_decide():
    a = items([[1, 1], [1, 0], [1, 0], [0, 1]], (0, 1), prefix="x")  # disjoint ids from b
    b = items([[0, 0], [0, 0], [1, 0], [0, 0]], (0, 1), prefix="y")
    assert sig.differs(a, b)[1] == sig.WELCH
    strong = sig.Seeds((0.80, 0.82, 0.81)), sig.Seeds((0.60, 0.62, 0.61))
    weak = sig.Seeds((0.80, 0.60)), sig.Seeds((0.70, 0.65))
    assert sig.differs(*strong) == (True, sig.WELCH)
    assert sig.differs(*weak) == (False, sig.WELCH)
    from scipy.stats import ttest_ind

    assert sig.welch_p((0.80, 0.60), (0.70, 0.65)) == pytest.approx(ttest_ind([0.8, 0.6], [0.7, 0.65],
                                                                               equal_var=False).pvalue)


def test_one_seed_without_items_is_untested_and_nothing_is_bold():
    marks, _ = sig.mark_column({"a": 0.7, "b": 0.6}, {"a": sig.Seeds((0.7,)), "b": sig.Seeds((0.6,))}, True)
    assert marks == {"a": sig.UNTESTED, "b": sig.UNTESTED}


def test_ties_within_the_test_and_a_clear_third():
    a = items([[1]] * 30 + [[0]] * 10)
    b = items([[1]] * 29 + [[0]] * 11)  # one item apart from a: a tie
    c = items([[1]] * 10 + [[0]] * 30)  # 20 items apart from a
    values = {"a": 0.75, "b": 29 / 40, "c": 0.25}
    marks, _ = sig.mark_column(values, {"a": a, "b": b, "c": c}, higher=True)
    assert marks == {"a": sig.TIE, "b": sig.TIE}


def test_lower_is_better_step_spread_and_exact_counts():
    fast, slow = sig.StepSpread(Spread(0.10, 0.09, 0.11, 50)), sig.StepSpread(Spread(0.20, 0.18, 0.22, 50))
    noisy = sig.StepSpread(Spread(0.12, 0.08, 0.30, 50))
    assert sig.mark_column({"f": 0.10, "s": 0.20}, {"f": fast, "s": slow}, higher=False)[0] == {"f": sig.BEST}
    assert sig.mark_column({"f": 0.10, "n": 0.12}, {"f": fast, "n": noisy}, higher=False)[0] == \
        {"f": sig.TIE, "n": sig.TIE}
    assert sig.differs(sig.Exact(1.0), sig.Exact(2.0)) == (True, sig.EXACT)


def test_values_that_print_the_same_rank_nothing():
    ev = {"a": sig.Seeds((0.5, 0.5)), "b": sig.Seeds((0.5, 0.5))}
    assert sig.mark_column({"a": 0.5, "b": 0.5}, ev, True, shown={"a": "50.0", "b": "50.0"}) == ({}, set())


def test_footnote_names_test_and_level():
    text = sig.footnote({sig.MCNEMAR, sig.WELCH})
    assert "McNemar's exact test on the same items" in text and "Welch" in text and "level 0.05" in text
    assert "≈" in text and "bold" in text


# -- below chance -----------------------------------------------------------------------------

def test_below_chance_with_its_exact_interval():
    from scipy.stats import binomtest

    obqa = chance.check("obqa", 0.22, 200, 0.25)  # 44 of 200 right on a 4-choice task
    ci = binomtest(44, 200).proportion_ci(method="exact")
    assert (obqa.low, obqa.high) == (pytest.approx(ci.low), pytest.approx(ci.high))
    assert obqa.verdict == chance.AT and obqa.low < 0.25 < obqa.high
    assert chance.check("obqa", 0.15, 200, 0.25).verdict == chance.BELOW  # [10.4, 20.7] lies below 25
    assert chance.check("boolq", 0.62, 200, 0.5).verdict is None
    assert "not above chance" in obqa.note() and "22.0%" in obqa.note()


# -- machine load -----------------------------------------------------------------------------

def test_load_record_and_the_flag_rule():
    start = machineload.LoadSample(1.5, 1.0, 0.5, cpu_time_s=10.0, wall_s=100.0)
    end = machineload.LoadSample(11.2, 6.0, 3.0, cpu_time_s=25.0, wall_s=120.0)
    rec = machineload.load_record(start, end, 2)
    assert rec["start"]["load1"] == 1.5 and rec["end"]["load1"] == 11.2
    assert (rec["cpu_time_s"], rec["wall_s"], rec["cores_used"]) == (15.0, 20.0, 0.75)
    assert machineload.busier_than_cores(rec)  # 11.2 runnable on 2 cores
    quiet = machineload.load_record(start, machineload.LoadSample(2.0, 1, 1, 25.0, 120.0), 2)
    assert not machineload.busier_than_cores(quiet)  # load = cores: the worker's own two threads
    assert not machineload.busier_than_cores(None) and not machineload.busier_than_cores({})
    assert "load 1.5 -> 11.2" in machineload.load_note(rec) and "0.75 cores" in machineload.load_note(rec)


def test_track_records_the_block():
    with machineload.track() as load:
        sum(i * i for i in range(200_000))
    assert load["cpu_count"] >= 1 and load["wall_s"] > 0 and load["cpu_time_s"] >= 0
    assert set(load["start"]) == set(machineload.LOAD_KEYS)


def test_combine_stages():
    a = {"cpu_count": 2, "start": {"load1": 1.0}, "end": {"load1": 5.0}, "cpu_time_s": 10.0, "wall_s": 10.0}
    b = {"cpu_count": 2, "start": {"load1": 1.5}, "end": {"load1": 1.8}, "cpu_time_s": 20.0, "wall_s": 10.0}
    both = machineload.combine([a, b])
    assert both["start"]["load1"] == 1.0 and both["end"]["load1"] == 1.8 and both["cores_used"] == 1.5
    assert machineload.busier_than_cores(both)  # stage 1 ended at load 5 on 2 CPUs
    assert machineload.combine([a]) is a
