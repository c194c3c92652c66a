"""Tables from runs with known per-item outcomes: bold, ties, CIs, --vs rows, chance and load flags."""
from __future__ import annotations

import pytest

from reports import comparison, render
from reports.comparison import Paired
from reports.load import load_results
from reports.tables import BUSY_NOTE, accuracy_tables, efficiency_tables
from tests.test_comparison import outcomes, write_run


@pytest.fixture
def res(tmp_path):
    """lora and losia, one seed: boolq 75% vs 50% (10 items apart, all one way), obqa 25% vs 31% (1 item)."""
    boolq_a, boolq_b = outcomes(20, 10, 0, 10)
    obqa_a, obqa_b = outcomes(4, 0, 1, 11)
    write_run(tmp_path, "losia", 0, {"boolq": boolq_a[:, 0], "obqa": obqa_a[:, 0]}, step_s=0.1)
    write_run(tmp_path, "lora", 0, {"boolq": boolq_b[:, 0], "obqa": obqa_b[:, 0]}, step_s=0.3, load=7.5)
    return load_results([tmp_path])


def _row(table, label):
    return next(r for r in table.rows if r.keys[1] == label)


def test_bold_tie_and_intervals_from_items(res):
    (table,) = accuracy_tables(res)
    losia, lora = _row(table, "losia"), _row(table, "lora")
    assert losia.cells["boolq"].best and losia.cells["boolq"].mark == "best"  # McNemar p = 2 / 2^10
    assert lora.cells["obqa"].mark == losia.cells["obqa"].mark == "tie"  # one discordant item: p = 1
    assert not lora.cells["obqa"].best
    # Avg pools both tasks' items: 10 discordant pairs one way, 1 the other: p = 2 * 12 / 2048 = 0.0117
    assert losia.cells["Avg"].best
    # each cell carries its 95% bootstrap CI over items for the error bars
    low, high = losia.cells["boolq"].interval
    assert low < 75.0 < high and high - low == pytest.approx(2 * 1.96 * (0.75 * 0.25 / 40) ** 0.5 * 100, abs=4)
    md = render.to_markdown(table)
    assert "**75.0**" in md and "25.0 ≈" in md and "McNemar's exact test on the same items" in md


def test_base_model_not_above_chance_is_flagged(res):
    (table,) = accuracy_tables(res)
    base = _row(table, "base (before training)")
    # the before-evaluations: obqa 25% (the losia run's, first found) on 16 items vs chance 25%
    assert base.cells["obqa"].flag == "chance" and "‡" in table.cell_text(base, "obqa")
    assert base.cells["boolq"].flag == ""  # 75% of 40 vs chance 25%: above
    assert any(n.startswith("‡ m: obqa: base model") and "not above chance" in n for n in table.notes)


def test_vs_rows_carry_the_paired_difference_and_its_ci(res):
    (table,) = accuracy_tables(res, vs="lora")
    row = _row(table, "losia − lora")
    boolq_a, boolq_b = outcomes(20, 10, 0, 10)
    order = sorted(range(40), key=lambda i: f"test-{i}")  # tables pair items in id order
    expected = comparison.difference(Paired("boolq", boolq_b[order], boolq_a[order], (0,)))
    cell = row.cells["boolq"]
    assert row.reference and cell.mean == pytest.approx(25.0)
    assert cell.interval == (pytest.approx(100 * expected.low), pytest.approx(100 * expected.high))
    assert table.cell_text(row, "boolq") == f"25.0 [{100 * expected.low:.1f}, {100 * expected.high:.1f}]"
    assert "Avg" in row.cells and not any(c.best for c in row.cells.values())


def test_busy_machine_flags_time_columns(res):
    (table,) = efficiency_tables(res)
    lora, losia = _row(table, "lora"), _row(table, "losia")
    assert lora.cells["step_time_s"].flag == "busy" and table.cell_text(lora, "step_time_s").endswith(" !")
    assert losia.cells["step_time_s"].flag == "" and BUSY_NOTE in table.notes
    assert any(n.startswith("m / lora seed 0: load 7.5 -> 1") for n in table.notes)
    # step times 0.1-0.12 s vs 0.3-0.36 s: p10-p90 ranges apart, so the faster one is bold
    assert losia.cells["step_time_s"].best and losia.cells["step_time_s"].interval == (pytest.approx(0.1),
                                                                                     pytest.approx(0.12))
