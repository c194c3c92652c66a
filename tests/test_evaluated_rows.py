"""What ``bench eval`` scored is said in its rows: an adapter evaluated into the main job's
results folder is a row of its own and never moves the base model's cells."""
from __future__ import annotations

import numpy as np
import pandas as pd

from harness import cli, records
from harness.schema.record import Evaluated
from reports.load import load_results
from reports.tables import BASE_LABEL, accuracy_tables
from tests import factories
from tests.test_comparison import write_run


def _bench_eval(out, run_id: str, acc: float, adapter: str | None = None) -> None:
    rec = factories.record(run_id, method="none", train_tasks=[], eval_tasks=["boolq"],
                           evals=[factories.evaluation("boolq", "eval", acc, n=20, chance=0.5)],
                           evaluated=Evaluated("m", adapter, "0123abcd" if adapter else None))
    if adapter:
        rec.config["adapter"] = adapter
    factories.write(out, rec)


def _cells(out) -> dict[str, float]:
    (table,) = accuracy_tables(load_results([out]))
    return {row.keys[1]: row.cells["boolq"].mean for row in table.rows if "boolq" in row.cells}, table


def test_an_evaluated_adapter_is_its_own_row_and_base_cells_stay(tmp_path):
    write_run(tmp_path, "lora", 0, {"boolq": np.array([1] * 4 + [0] * 16)})  # base (before) 20%
    before, _ = _cells(tmp_path)
    _bench_eval(tmp_path, "eval-adapter", 0.35, adapter="/somewhere/losia-boolq")
    after, table = _cells(tmp_path)
    assert after[BASE_LABEL] == before[BASE_LABEL] == 20.0  # not the mean of 20 and the adapter's 35
    assert after["adapter losia-boolq"] == 35.0 and after["lora"] == before["lora"]
    assert not any("35" in note for note in table.notes)  # the chance note quotes the base model only
    records.rebuild_table(tmp_path)
    rows = pd.read_csv(tmp_path / "results.csv")
    mine = rows[rows.run_id == "eval-adapter"].iloc[0]
    assert (mine.adapter, mine.adapter_sha256, mine.label) == ("/somewhere/losia-boolq", "0123abcd",
                                                                "adapter losia-boolq")


def test_table_of_an_eval_only_folder(tmp_path, capsys):
    _bench_eval(tmp_path, "eval-base", 0.6)
    _bench_eval(tmp_path, "eval-adapter", 0.75, adapter="/x/lora-boolq")
    assert cli.main(["table", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "evaluated" in out and "60.0" in out and "75.0" in out and "adapter lora-boolq" in out


def test_a_record_of_the_old_format_reads_as_the_current_one(tmp_path):
    """run.json as written before the settings catalogue: evaluation keys in config.train, a
    duplicate train_config, eval summaries without their settings, no ``evaluated``."""
    old = {"run_id": "old", "status": "ok", "environment": factories.ENV, "train_config": {"lr": 1e-3},
           "config": {"model": "m", "method": "none", "method_config": {}, "train_tasks": [], "eval_tasks": ["boolq"],
                      "seed": 0, "adapter": "/a/b", "train": {"eval_limit": 20, "eval_batch_size": 8}},
           "evals": [{"task": "boolq", "phase": "eval", "metrics": [{"name": "acc", "value": 0.4, "n": 20}]}]}
    from harness.safe_io import write_json

    write_json(tmp_path / "runs" / "old" / "run.json", old)
    rec = records.read_record(tmp_path / "runs" / "old" / "run.json")
    assert rec.config["train"] == {} and rec.config["eval"]["eval_limit"] == 20 and "train_config" not in rec.to_json()
    assert rec.evaluated == Evaluated("m", "/a/b") and rec.measured_by(rec.evals[0])["num_beams"] == 1
    [row] = rec.rows()
    assert (row["adapter"], row["eval_limit"], row["num_beams"], row["unit"]) == ("/a/b", 20, 1, "fraction")
    again = type(rec).from_json(rec.to_json())
    assert again == rec  # the current format round-trips


def test_an_evaluated_adapter_is_labelled_by_what_it_is():
    from harness.labels import variant_labels

    eval_only = {"model": "m", "method": "none", "train_tasks": [], "train": {}, "method_config": {}}
    labels = variant_labels({
        "saved": {**eval_only, "adapter": "results/runs/m__lora__boolq__s0__0123456789/adapter"},
        "folder": {**eval_only, "adapter": "/x/my-adapter"},
        "base": eval_only,
    })
    assert labels == {"saved": "adapter lora (boolq s0)", "folder": "adapter my-adapter", "base": "none"}
