"""Statistics on hand-computed cases, and ``bench compare`` on synthetic run folders."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from harness import cli, records
from reports import stats
from tests import factories
from reports.load import ReportError


def test_seed_summary_t_interval():
    s = stats.seed_summary([0.5, 0.6, 0.7])
    # mean 0.6, sd 0.1, t(0.975, 2) = 4.302653 -> half width 4.302653 * 0.1 / sqrt(3) = 0.248414
    assert (s.mean, s.n) == (pytest.approx(0.6), 3) and s.std == pytest.approx(0.1)
    assert (s.low, s.high) == (pytest.approx(0.6 - 0.248414, abs=1e-6), pytest.approx(0.6 + 0.248414, abs=1e-6))
    one = stats.seed_summary([0.4])
    assert (one.mean, one.std, one.low, one.n) == (0.4, None, None, 1)


@pytest.mark.parametrize("b, c, p", [
    (1, 9, 2 * 11 / 1024),  # P(X <= 1 | n=10) = (1 + 10) / 2^10, two-sided
    (0, 5, 2 / 32),
    (5, 5, 1.0),
    (0, 0, 1.0),
    (3, 1, 2 * 5 / 16),  # P(X <= 1 | n=4) = (1 + 4) / 16
])
def test_mcnemar_exact(b, c, p):
    assert stats.mcnemar_exact(b, c) == pytest.approx(p)
    assert stats.mcnemar_exact(c, b) == pytest.approx(p)


def test_mcnemar_matches_scipy():
    from scipy.stats import binomtest

    for b, c in [(7, 20), (12, 3), (30, 41)]:
        assert stats.mcnemar_exact(b, c) == pytest.approx(binomtest(b, b + c, 0.5).pvalue)


def test_paired_bootstrap():
    assert stats.paired_bootstrap([1, 0, 1, 0], [1, 0, 1, 0]) == (0.0, 0.0, 0.0)
    diff, low, high = stats.paired_bootstrap([0] * 10, [1] * 10)
    assert diff == low == high == 1.0
    a = [1] * 50 + [0] * 50
    b = [1] * 60 + [0] * 40  # B also right on 10 items A gets wrong: +0.10, discordant in one direction
    diff, low, high = stats.paired_bootstrap(a, b)
    # sd of the per-item differences is 0.3015; the percentile interval is near +-1.96 * 0.3015 / 10
    assert diff == pytest.approx(0.1) and low == pytest.approx(0.04, abs=0.015) and high == pytest.approx(0.16, abs=0.015)


def make_run(root: Path, method: str, seed: int, correct: list[bool], prompt: str = "mc#1",
             task: str = "arc_e", retention: dict[str, list[bool]] | None = None) -> None:
    """A finished run trained on ``task``; ``retention`` maps other evaluated tasks to their answers."""
    run_id = f"m__{method}__{task}__s{seed}__{prompt[-1]}"
    answered = {task: correct, **(retention or {})}
    evals = [factories.evaluation(name, "after", sum(a) / len(a), n=len(a), prompt=prompt)
             for name, a in answered.items()]
    rec = factories.record(run_id, method=method, seed=seed, train_tasks=[task], retention_tasks=list(retention or {}),
                           evaluation_config={"eval_limit": len(correct)}, evals=evals)
    factories.write(root, rec, {("after", name): [{"id": f"test-{i}", "correct": c} for i, c in enumerate(a)]
                                for name, a in answered.items()})


def test_compare_pairs_items_and_seeds(tmp_path, capsys):
    for seed in (0, 1):
        make_run(tmp_path, "lora", seed, [True] * 10 + [False] * 30)
        make_run(tmp_path, "losia", seed, [True] * 10 + [True] * 12 + [False] * 18)
    (row,) = stats.compare_methods(tmp_path, "lora", "losia")
    assert (row.items, row.seeds, row.discordant) == (40, [0, 1], (0, 24))
    assert row.diff == pytest.approx(12 / 40) and row.a.mean == pytest.approx(0.25) and row.a.std == 0.0
    assert row.p_value == pytest.approx(2 / 2**24) and row.significant and row.low > 0
    assert cli.main(["compare", str(tmp_path), "--methods", "lora,losia"]) == 0
    out = capsys.readouterr().out
    assert "arc_e" in out and "+30.0" in out and "yes" in out


def test_compare_pairs_per_task_runs_by_their_training_task(tmp_path):
    """With --per-task each (method, seed) has one run per task: each task pairs its own runs."""
    for seed in (0, 1):
        make_run(tmp_path, "lora", seed, [True] * 5 + [False] * 5, task="arc_e")
        make_run(tmp_path, "lora", seed, [False] * 10, task="obqa")
        make_run(tmp_path, "losia", seed, [True] * 10, task="arc_e")
        make_run(tmp_path, "losia", seed, [True] * 2 + [False] * 8, task="obqa")
    rows = {r.task: r for r in stats.compare_methods(tmp_path, "lora", "losia")}
    assert sorted(rows) == ["arc_e", "obqa"]
    assert rows["arc_e"].diff == pytest.approx(0.5) and rows["obqa"].diff == pytest.approx(0.2)
    assert rows["obqa"].seeds == [0, 1] and rows["obqa"].discordant == (0, 4)


def test_compare_per_task_grid_with_retention_compares_each_task_per_training(tmp_path, capsys):
    """Every task is also another run's retention task: one comparison per (task, trained on)."""
    for seed in (0, 1):
        make_run(tmp_path, "lora", seed, [True] * 5 + [False] * 5, task="arc_e", retention={"obqa": [False] * 10})
        make_run(tmp_path, "lora", seed, [False] * 10, task="obqa", retention={"arc_e": [True] * 10})
        make_run(tmp_path, "losia", seed, [True] * 10, task="arc_e", retention={"obqa": [True] * 10})
        make_run(tmp_path, "losia", seed, [True] * 2 + [False] * 8, task="obqa", retention={"arc_e": [False] * 10})
    rows = {(r.task, r.trained_on): r.diff for r in stats.compare_methods(tmp_path, "lora", "losia")}
    assert rows == pytest.approx({("arc_e", "arc_e"): 0.5, ("obqa", "arc_e"): 1.0,
                                  ("arc_e", "obqa"): -1.0, ("obqa", "obqa"): 0.2})
    assert cli.main(["compare", str(tmp_path), "--methods", "lora,losia"]) == 0
    assert "trained on" in capsys.readouterr().out


def test_compare_refuses_differently_measured_runs(tmp_path):
    make_run(tmp_path, "lora", 0, [True, False])
    make_run(tmp_path, "losia", 0, [True, True], prompt="llm-adapters#2")
    with pytest.raises(ReportError, match="evaluated differently"):
        stats.compare_methods(tmp_path, "lora", "losia")
    with pytest.raises(ReportError, match="no finished runs of 'dora'"):
        stats.compare_methods(tmp_path, "lora", "dora")
    assert not math.isnan(json.loads((records.run_dir(tmp_path, "m__lora__arc_e__s0__1") / "run.json").read_text())
                          ["evals"][0]["metrics"][0]["value"])
