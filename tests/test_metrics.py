"""The figure catalogue: every recorded figure is in it with the unit the record stores, and
tables take their direction from it rather than from the figure's name."""
from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
import pytest
from torch import nn

from harness import driver, metrics
from harness.measure import step_summary
from harness.trainer import TrainResult
from reports.tables import pivot
from tests import factories


def _steps(times: list[float], tokens: list[int]) -> list[dict]:
    return [{"step": i, "loss": 1.0, "lr": 0.1, "step_time_s": t, "tokens": n, "profiled": False}
            for i, (t, n) in enumerate(zip(times, tokens))]


def test_every_cost_figure_is_catalogued_with_its_unit():
    result = TrainResult(steps=_steps([9.0, 1.0, 2.0, 3.0], [10, 20, 30, 40]), train_time_s=15.0, profiled_step=0,
                         profile={"activation_bytes": 64, "flops_per_step": 1000, "grad_bytes": 8,
                                  "optimizer_state_bytes": 16, "extra_state_bytes": 0})
    probe = SimpleNamespace(figures={"peak_rss_bytes": 2**30, "rss_before_train_bytes": 2**29, "other_gpu_processes": 1})
    adapted = SimpleNamespace(model=nn.Linear(2, 2), trainable_params=lambda: 6)
    costs = driver._costs([result], SimpleNamespace(timing_warmup_steps=1), probe, 0.5, adapted, 60)
    assert "other_gpu_processes" not in costs  # a warning about the device, not a cost
    assert {name: f.unit for name, f in costs.items()} == {name: metrics.unit(name) for name in costs}
    assert set(costs) <= set(metrics.CATALOGUE)
    assert costs["tokens_per_s"][0] == pytest.approx(90 / 6.0) and costs["step_time_steps"][0] == 3


def test_tokens_per_s_covers_exactly_the_timed_steps():
    steps = _steps([5.0, 1.0, 1.0, 2.0], [1, 10, 10, 40])
    out = step_summary(steps, warmup=1, excluded={2})
    assert out["step_time_s"] == pytest.approx(1.5) and out["step_time_steps"] == 2
    assert out["tokens_per_s"] == pytest.approx(50 / 3.0)


def test_derived_figures_carry_catalogue_units_and_phases():
    cfg = SimpleNamespace(train_tasks=("a", "b"), sequence=True, retention_tasks=("r",))
    acc = {("a", "stage-1"): 0.6, ("b", "stage-1"): 0.2, ("a", "stage-2"): 0.5, ("b", "stage-2"): 0.7,
           ("r", "before"): 0.4, ("r", "stage-2"): 0.3}
    evals = [factories.evaluation(t, p, v) for (t, p), v in acc.items()]
    record = factories.record("r", text_loss_before=2.0, text_loss_after=2.5)
    out, matrix = driver.derived_metrics(cfg, evals, record)
    assert {d.phase for d in out} == {metrics.stage(2)}
    assert all(d.unit == metrics.unit(d.metric) for d in out)
    by = {(d.task, d.metric): d.value for d in out}
    assert by[("sequence", "bwt")] == pytest.approx(-0.1) and by[("a", "forgetting")] == pytest.approx(0.1)
    assert by[("retention-mean", "forgetting")] == pytest.approx(0.1)
    assert by[("retention-text", "lm_loss_forgetting")] == pytest.approx(0.5)
    assert matrix["rows"] == ["stage-1", "stage-2"]


def _two_rows(metric: str) -> pd.DataFrame:
    return pd.DataFrame({"label": ["x", "y"], "metric": [metric] * 2, "value": [1.0, 2.0], "seed": [0, 0],
                         "run_id": ["1", "2"], "model": ["m", "m"], "phase": ["train"] * 2})


@pytest.mark.parametrize("metric, ranked", [("step_time_s", True), ("tokens_per_s", True), ("step_time_steps", False),
                                            ("exact_match", False)])
def test_ranking_follows_the_catalogue(metric, ranked):
    """Step time and tokens/s have a direction in the catalogue, so their cells are ranked (one run
    a side is no evidence: marked untested, never bold); a count of timed steps or a metric the
    harness did not define ranks nothing (no direction guessed from the name)."""
    table = pivot(_two_rows(metric), ["label"], "metric", name="t", title="t",
                  better={metric: metrics.task_metric(metric).higher_is_better})
    assert not any(r.cells[metric].best for r in table.rows)
    assert [r.cells[metric].mark for r in table.rows] == (["untested"] * 2 if ranked else ["", ""])


def test_phase_helpers_round_trip():
    assert metrics.stage_number(metrics.stage(3)) == 3 and metrics.stage_number(metrics.AFTER) is None
    assert metrics.final_phase(["before", "stage-2", "stage-10"]) == "stage-10"
    assert metrics.final_phase(["before", "eval"]) == "eval" and metrics.final_phase(["before", "after"]) == "after"


def test_an_uncatalogued_figure_is_an_error():
    """No unit is guessed for a name nobody registered (it used to become a "fraction"), except a
    metric an lm-eval task names itself."""
    with pytest.raises(metrics.UnknownFigure, match="step_time_ms"):
        metrics.unit("step_time_ms")
    made_up = factories.evaluation("arc_e", "after", 0.5)
    made_up.metrics[0]["name"] = "made_up"
    with pytest.raises(metrics.UnknownFigure, match="made_up"):
        factories.record("r", evals=[made_up]).rows()
    made_up.backend = "lm-eval"
    assert factories.record("r", evals=[made_up]).rows()[0]["unit"] == "fraction"
