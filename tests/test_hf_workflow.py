"""The Hugging Face workflow end to end on the tiny model: bench run saves what it trained,
steps.jsonl and TensorBoard follow it, bench eval --adapter gives back the run's own scores."""
from __future__ import annotations

import pandas as pd
import pytest

from harness import records
from harness.cli import main

RUN = ["run", "--tasks", "arc_e", "--model", "tiny-llama", "--max-steps", "3", "--eval-limit", "8",
       "--retention", "none", "--executor", "inline", "--no-progress"]


def _after(out, method: str) -> tuple[str, float]:
    df = pd.read_csv(out / "results.csv")
    row = df[(df.method == method) & (df.metric == "acc") & (df.phase == "after")].iloc[0]
    return row.run_id, row.value


@pytest.mark.needs_data  # trains and evaluates on arc_e
@pytest.mark.parametrize("method,fmt", [("lora", "peft"), ("losia-pro", "delta")])
def test_saved_adapter_rescored_by_bench_eval_equals_the_run(tmp_path, method, fmt):
    pytest.importorskip("tensorboard")
    assert main([*RUN, "--methods", method, "--out", str(tmp_path), "--report-to", "tensorboard"]) == 0
    run_id, after = _after(tmp_path, method)
    folder = records.run_dir(tmp_path, run_id)
    record = records.read_run(folder / "run.json")
    assert record["saved"]["format"] == fmt and record["saved"]["bytes"] > 0
    assert len(records.read_jsonl(folder / "steps.jsonl")) == 3
    assert (tmp_path / "tensorboard" / run_id).is_dir()
    adapter = str((folder / "adapter").resolve())
    for args in (["--model", "tiny-llama", "--adapter", adapter], ["--model", adapter]):
        assert main(["eval", *args, "--tasks", "arc_e", "--eval-limit", "8", "--out", str(tmp_path / "eval"),
                     "--no-progress"]) == 0
    evals = [records.read_run(p) for p in (tmp_path / "eval" / "runs").glob("*/run.json")]
    assert len(evals) == 1 and evals[0]["config"]["adapter"] == adapter  # both spellings: one evaluation
    rescored = evals[0]["evals"][0]["metrics"][0]
    assert rescored["name"] == "acc" and rescored["value"] == after
    ours = records.read_jsonl(folder / "samples" / "after" / "arc_e.jsonl")
    theirs = records.read_jsonl(next((tmp_path / "eval" / "runs").glob("*/samples/eval/arc_e.jsonl")))
    assert [s["logliks"] for s in ours] == [s["logliks"] for s in theirs]  # bit for bit


@pytest.mark.needs_data  # trains and evaluates on arc_e
def test_save_none_keeps_nothing_and_a_negative_fewshot_is_refused(tmp_path, capsys):
    assert main([*RUN, "--methods", "lora", "--out", str(tmp_path), "--save", "none"]) == 0
    run_id, _ = _after(tmp_path, "lora")
    assert not (records.run_dir(tmp_path, run_id) / "adapter").exists()
    assert "saved" not in records.read_run(records.run_dir(tmp_path, run_id) / "run.json")
    assert main([*RUN, "--methods", "lora", "--out", str(tmp_path), "--num-fewshot", "-1"]) == 2
    assert "--num-fewshot must be >= 0" in capsys.readouterr().err


def test_help_shows_the_dataclass_defaults(capsys):
    from harness.config import EvalConfig, TrainConfig

    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"(default {TrainConfig.max_steps})" in text and f"default {EvalConfig.eval_limit})" in text
