"""--report-to: each tracker's run read back offline (TensorBoard events, MLflow file store, W&B offline)."""
from __future__ import annotations

import importlib
import json
import time
import struct

import pytest

from harness import trackers
from harness.config import ConfigError
from tests import factories

RECORD = factories.record("run-1", model="tiny-llama", method="lora", method_config={"r": 8, "target_modules": ["q_proj"]},
                          train={"lr": 0.001}, evaluation_config={"eval_limit": 10},
                          evals=[factories.evaluation("arc_e", "after", 0.5)],
                          costs={"step_time_s": 0.25, "trainable_params": 1234})
CONFIG = RECORD.config
STEPS = [{"step": s, "loss": 2.0 - s / 10, "lr": 1e-3, "step_time_s": 0.1, "tokens": 24, "profiled": s == 0}
         for s in range(3)]


def _run(names: tuple[str, ...], out) -> None:
    t = trackers.Trackers(names, out, "run-1", CONFIG)
    for step in STEPS:
        t.log_step(step)
    t.finish(RECORD)


def test_report_to_is_checked_up_front_in_one_line(monkeypatch):
    assert trackers.parse_report_to("none") == () and trackers.parse_report_to(None) == ()
    with pytest.raises(ConfigError, match="unknown tracker; valid: tensorboard, wandb, mlflow"):
        trackers.parse_report_to("tensorboard,comet")
    real = importlib.import_module

    def missing(name, *a, **k):
        if name == "wandb":
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(importlib, "import_module", missing)
    with pytest.raises(trackers.MissingTracker, match=r"pip install 'peft-bench\[wandb\]'"):
        trackers.parse_report_to("wandb")


def test_tensorboard_scalars_read_back(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _run(("tensorboard",), tmp_path)
    events = EventAccumulator(str(tmp_path / "tensorboard" / "run-1"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert [e.value for e in events.Scalars("train/loss")] == pytest.approx([2.0, 1.9, 1.8])
    # one step convention everywhere: the tracker's step is steps.jsonl's 0-based step
    assert [e.step for e in events.Scalars("train/loss")] == [s["step"] for s in STEPS] == [0, 1, 2]
    assert "train/profiled" not in tags and "train/step" not in tags
    assert events.Scalars("after/arc_e/acc")[0].value == pytest.approx(0.5)
    assert events.Scalars("train/arc_e/trainable_params")[0].value == 1234


def _mlflow_run(uri: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri if uri.startswith("file:") else None)
    (run,) = client.search_runs([client.get_experiment_by_name("peft-bench").experiment_id])
    return client, run


def test_mlflow_default_store_in_out_read_back(tmp_path, monkeypatch):
    """With no MLFLOW_TRACKING_URI, what the README installs records: a store in the results folder."""
    pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # registered, so the switch bench sets is undone
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE")
    assert trackers.parse_report_to("mlflow", tmp_path) == ("mlflow",)  # the store opens before any run
    _run(("mlflow",), tmp_path)
    client, run = _mlflow_run(trackers.mlflow_uri(tmp_path))
    assert str(tmp_path) in trackers.mlflow_uri(tmp_path)
    assert run.info.run_name == "run-1" and run.info.status == "FINISHED"
    assert run.data.params["train.lr"] == "0.001"
    assert json.loads(run.data.params["method_config.target_modules"]) == ["q_proj"]
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert [m.value for m in history] == pytest.approx([2.0, 1.9, 1.8])
    assert [m.step for m in history] == [s["step"] for s in STEPS]
    assert run.data.metrics["after/arc_e/acc"] == pytest.approx(0.5)


def test_mlflow_default_store_is_sqlite_with_the_full_package(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(trackers, "_full_mlflow", lambda: True)
    assert trackers.mlflow_uri(tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking:5000")
    assert trackers.mlflow_uri(tmp_path) == "http://tracking:5000"


def test_a_resumed_sequence_continues_the_step_count(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    t = trackers.Trackers(("tensorboard",), tmp_path, "run-1", CONFIG, first_step=3)  # 3 kept steps
    t.log_step(STEPS[0])
    t.finish(RECORD)
    events = EventAccumulator(str(tmp_path / "tensorboard" / "run-1"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [3]


def test_mlflow_store_it_refuses_is_one_line_before_any_run(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    with pytest.raises(ConfigError, match="set MLFLOW_ALLOW_FILE_STORE=true") as err:
        trackers.parse_report_to("mlflow", tmp_path)
    assert "\n" not in str(err.value)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # the switch named: the same store records
    trackers.parse_report_to("mlflow", tmp_path)
    _run(("mlflow",), tmp_path)
    assert _mlflow_run((tmp_path / "mlruns").as_uri())[1].info.status == "FINISHED"


def _wandb_records(path) -> list:
    """The records of an offline ``.wandb`` file (a LevelDB-style log of protobuf records)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, block, buf, out = path.read_bytes(), 7, 32768, b"", []  # 7: the ':W&B' file header
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _crc, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
        buf, pos = buf + data[pos + 7:pos + 7 + n], pos + 7 + n
        if kind in (1, 4):  # FULL or LAST fragment
            out.append(pb.Record.FromString(buf))
            buf = b""
    return out


def test_wandb_offline_run_records(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "elsewhere"))  # honoured, as by wandb itself
    _run(("wandb",), tmp_path / "out")
    assert not (tmp_path / "out" / "wandb").exists()
    (path,) = (tmp_path / "elsewhere" / "wandb").glob("offline-run-*/run-*.wandb")
    # wandb's service process writes the file; on a loaded machine its last records land a moment later
    deadline = time.monotonic() + 60
    while True:
        records = _wandb_records(path)
        runs = [r.run for r in records if r.WhichOneof("record_type") == "run"]
        if runs or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    run = runs[0]  # later ones update it
    assert run.display_name == "run-1" and run.project == "peft-bench"
    config = {u.key: json.loads(u.value_json) for u in run.config.update}
    assert config["train"]["lr"] == 0.001 and config["method_config"]["r"] == 8
    history = [{tuple(i.nested_key) or (i.key,): json.loads(i.value_json) for i in r.history.item}
               for r in records if r.WhichOneof("record_type") == "history"]
    losses = [h[("train/loss",)] for h in history if ("train/loss",) in h]
    assert losses == pytest.approx([2.0, 1.9, 1.8])
    assert [h[("_step",)] for h in history if ("train/loss",) in h] == [s["step"] for s in STEPS]
    summary = {u.key: json.loads(u.value_json) for r in records if r.WhichOneof("record_type") == "summary"
               for u in r.summary.update if u.key}
    assert summary["after/arc_e/acc"] == pytest.approx(0.5)
