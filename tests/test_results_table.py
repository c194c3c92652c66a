"""results.csv / .parquet carry each run's settings as columns; counts stay integers.

The records here are written by hand in the format run.json had before the settings catalogue
(evaluation keys inside ``config.train``, no ``evaluated``): old records must stay readable."""
from __future__ import annotations

import pandas as pd

from harness import records
from harness.safe_io import write_json

ENV = {"device": {"type": "cpu", "name": "Test CPU"}, "git_commit": "abc123"}


def _record(run_id: str, lr: float, r: int, acc: float) -> dict:
    train = {"lr": lr, "batch_size": 8, "max_length": 128, "max_steps": 10, "eval_limit": 20}
    return {"run_id": run_id, "status": "ok", "environment": ENV,
            "config": {"model": "tiny-llama", "method": "lora", "method_config": {"r": r, "lora_alpha": 64},
                       "train_tasks": ["arc_e"], "eval_tasks": ["arc_e"], "seed": 0, "train": train},
            "evals": [{"task": "arc_e", "phase": "after", "shots": 0,
                       "metrics": [{"name": "acc", "value": acc, "stderr": 0.1, "n": 20}]}],
            "costs": {"steps": [10, "count"], "trainable_params": [1234, "count"]}}


def test_settings_columns_and_integer_counts(tmp_path):
    for rec in (_record("a", 1e-3, 8, 0.5), _record("b", 3e-4, 16, 0.6), _record("c", 3e-4, 8, 0.7)):
        write_json(tmp_path / "runs" / rec["run_id"] / "run.json", rec)
    eval_only = {"run_id": "e", "status": "ok", "environment": ENV,
                 "config": {"model": "tiny-llama", "method": "none", "method_config": {}, "train_tasks": [],
                            "eval_tasks": ["arc_e"], "seed": 0, "train": {"eval_limit": 20}},
                 "evals": [{"task": "arc_e", "phase": "eval", "metrics": [{"name": "acc", "value": 0.4, "n": 20}]}]}
    write_json(tmp_path / "runs" / "e" / "run.json", eval_only)
    records.rebuild_table(tmp_path)
    df = pd.read_csv(tmp_path / "results.csv")
    acc = df[(df.metric == "acc") & (df.method == "lora")]
    assert acc.groupby("lr").value.mean().round(6).to_dict() == {3e-4: 0.65, 1e-3: 0.5}
    row = acc[acc.run_id == "b"].iloc[0]
    assert (row.batch_size, row.steps, row.max_length, row.r, row.device, row.git_commit) == \
        (8, 10, 128, 16, "cpu: Test CPU", "abc123")
    assert row.label == "lora (lr=0.0003, r=16)"  # the variant label reports use
    text = (tmp_path / "results.csv").read_text()
    assert ",20.0," not in text and ",8.0," not in text  # n, batch size, r: integers, not floats
    base = df[df.run_id == "e"].iloc[0]
    assert pd.isna(base.lr) and pd.isna(base.r) and base.device == "cpu: Test CPU"
    parquet = pd.read_parquet(tmp_path / "results.parquet")
    assert str(parquet.r.dtype) == "Int64" and str(parquet.n.dtype) == "Int64"
