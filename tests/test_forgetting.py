"""Forgetting metrics on a hand-built accuracy matrix."""
from __future__ import annotations

import pytest

from harness.forgetting import backward_transfer, final_average, retention_forgetting, sequential_forgetting

# rows: after stage 0, 1, 2; columns: tasks 0, 1, 2
R = [
    [0.80, 0.30, 0.20],
    [0.70, 0.90, 0.25],
    [0.60, 0.85, 0.75],
]


def test_final_average():
    assert final_average(R) == pytest.approx((0.60 + 0.85 + 0.75) / 3)


def test_bwt():
    # (R[2][0] - R[0][0] + R[2][1] - R[1][1]) / 2 = (-0.20 - 0.05) / 2
    assert backward_transfer(R) == pytest.approx(-0.125)
    assert backward_transfer([[0.5]]) == 0.0


def test_per_task_forgetting_uses_the_best_earlier_stage():
    # task 0: max(0.80, 0.70) - 0.60 = 0.20; task 1: max(0.30, 0.90) - 0.85 = 0.05
    assert sequential_forgetting(R) == pytest.approx([0.20, 0.05])


def test_retention_forgetting_sign():
    assert retention_forgetting({"a": 0.5, "b": 0.4}, {"a": 0.45, "b": 0.5}) == pytest.approx({"a": 0.05, "b": -0.1})


# -- end to end on the tiny model ------------------------------------------------------------
import json  # noqa: E402

import torch  # noqa: E402

from harness import cli, driver  # noqa: E402

RUN = ["run", "--model", "tiny-llama", "--max-steps", "2", "--eval-limit", "6", "--executor", "inline",
       "--no-progress", "--set", "eval_batch_size=8"]


def test_before_evaluation_is_computed_once_for_two_methods(tmp_path, monkeypatch):
    calls = []
    real = driver.evaluate_task

    def spy(model, tok, task, cfg, phase, device, progress):
        calls.append((task, phase))
        return real(model, tok, task, cfg, phase, device, progress)

    monkeypatch.setattr(driver, "evaluate_task", spy)
    assert cli.main([*RUN, "--out", str(tmp_path), "--methods", "lora,full", "--tasks", "synthetic"]) == 0
    assert calls.count(("synthetic", "before")) == 1
    assert calls.count(("synthetic", "after")) == 2


@pytest.mark.needs_data
def test_retention_rows_in_the_tidy_table(tmp_path):
    import pandas as pd

    assert cli.main([*RUN, "--out", str(tmp_path), "--methods", "lora", "--tasks", "synthetic",
                     "--retention", "arc_e,boolq"]) == 0
    df = pd.read_csv(tmp_path / "results.csv")
    f = df[df.metric == "forgetting"].set_index("task").value
    acc = df[df.metric == "acc"].set_index(["task", "phase"]).value
    for task in ("arc_e", "boolq"):
        assert f[task] == pytest.approx(acc[(task, "before")] - acc[(task, "after")])
    assert f["retention-mean"] == pytest.approx((f["arc_e"] + f["boolq"]) / 2)


@pytest.mark.needs_data
def test_interrupted_sequence_resumes_after_the_last_finished_stage(tmp_path, monkeypatch):
    argv = [*RUN, "--out", str(tmp_path), "--methods", "lora", "--sequence", "synthetic,arc_e", "--retention", "none"]
    real_eval, real_train = driver.evaluate_task, driver.train

    def crash_in_stage_2(model, tok, task, cfg, phase, device, progress):
        if phase == "stage-2":
            raise KeyboardInterrupt  # the user stops the run during stage 2's evaluation
        return real_eval(model, tok, task, cfg, phase, device, progress)

    monkeypatch.setattr(driver, "evaluate_task", crash_in_stage_2)
    assert cli.main(argv) == 130
    run = next((tmp_path / "runs").iterdir())
    assert (run / "checkpoint.pt").exists()
    assert [s["stage"] for s in json.loads((run / "run.json").read_text())["stages"]] == [1]

    trained = []
    monkeypatch.setattr(driver, "evaluate_task", real_eval)
    monkeypatch.setattr(driver, "train", lambda *a, **k: trained.append(1) or real_train(*a, **k))
    assert cli.main(argv) == 0
    assert trained == [1]  # only stage 2 was trained again
    rec = json.loads((run / "run.json").read_text())
    assert rec["status"] == "ok" and rec["resumed_after_stage"] == 1 and not (run / "checkpoint.pt").exists()
    R = rec["accuracy_matrix"]["R"]
    assert len(R) == 2 and len(R[0]) == 2
    bwt = next(d for d in rec["derived"] if d["metric"] == "bwt")["value"]
    assert bwt == pytest.approx(R[1][0] - R[0][0])
    steps = [json.loads(line) for line in (run / "steps.jsonl").read_text().splitlines()]
    assert [s["stage"] for s in steps] == [1, 1, 2, 2]


def test_losia_checkpoint_carries_its_subnets_and_a_stage_resets_the_optimizer():
    from harness.models import load_model
    from methods import registry
    from methods.base import TrainContext

    spec = registry.get("losia-pro")
    a = spec.adapt(load_model("tiny-llama")[0], spec.default_config(), TrainContext(seed=1))
    b = spec.adapt(load_model("tiny-llama")[0], spec.default_config(), TrainContext(seed=2))
    assert any(not torch.equal(x.rows, y.rows) for x, y in zip(a.subnets, b.subnets))
    b.load_state_dict(a.state_dict())
    assert all(torch.equal(x.rows, y.rows) and torch.equal(x.cols, y.cols) for x, y in zip(a.subnets, b.subnets))
    old = b.optimizer
    b.start_stage(TrainContext(seed=2, lr=1e-3, total_steps=5))
    assert b.optimizer is not old and b.ctx.lr == 1e-3
    assert all(torch.equal(x.rows, y.rows) for x, y in zip(a.subnets, b.subnets))


@pytest.mark.needs_data
def test_sequence_runs_for_losia(tmp_path):
    argv = [*RUN, "--out", str(tmp_path), "--methods", "losia-pro", "--sequence", "synthetic,arc_e",
            "--retention", "none"]
    assert cli.main(argv) == 0
    rec = json.loads(next((tmp_path / "runs").iterdir()).joinpath("run.json").read_text())
    assert [s["stage"] for s in rec["stages"]] == [1, 2] and len(rec["accuracy_matrix"]["R"]) == 2
