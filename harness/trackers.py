"""Experiment trackers (``--report-to tensorboard,wandb,mlflow``), as HF Trainer's ``report_to``.

One tracker run per harness run, named by the run id: the run's resolved config as
hyperparameters, each optimizer step's numbers (loss, lr, step time, tokens, memory: whatever
the step record holds) under ``train/``, and at the end every figure of the run's rows in the
tidy table (accuracies per task and phase, costs, forgetting) as ``<phase>/<task>/<metric>``.

Where each writes, following each tool's own conventions:

* tensorboard: ``<out>/tensorboard/<run_id>/`` (``tensorboard --logdir <out>/tensorboard``);
* wandb: project ``$WANDB_PROJECT`` (default ``peft-bench``), files under ``$WANDB_DIR/wandb/``
  (default ``<out>/wandb/``); ``WANDB_MODE=offline`` works without network, ``wandb sync``
  uploads later;
* mlflow: ``$MLFLOW_TRACKING_URI``; unset, a store in ``<out>``: ``sqlite:///<out>/mlflow.db``
  where the full ``mlflow`` package is installed (``pip install 'peft-bench[mlflow]'``), else
  (``mlflow-skinny``, as the test extra brings) the file store ``<out>/mlruns``, which MLflow 3
  opens only with ``MLFLOW_ALLOW_FILE_STORE=true`` (set for that store). Experiment
  ``$MLFLOW_EXPERIMENT_NAME`` (default ``peft-bench``).

Step numbers: a tracker's step is the 0-based index of the optimizer step in the run, the
``step`` field of ``steps.jsonl`` (with ``--sequence``, whose ``steps.jsonl`` counts each stage
from 0, the trackers count on across stages: line k of the file is step k).

The packages are optional extras, imported only when asked for. Everything is checked before
any run starts (``parse_report_to``): a missing package or an unusable store is one line naming
what to install or set. Trackers observe: they never change a run's id or its numbers.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import re
import time
from pathlib import Path
from typing import Any, Protocol

from harness.config import ConfigError
from harness.schema.record import RunRecord

PROJECT = "peft-bench"  # W&B project and MLflow experiment unless the environment names one
TRACKERS = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}  # name -> module to import
SKIPPED_STEP_KEYS = ("step", "stage", "profiled")  # step indices and flags, not figures


class MissingTracker(ConfigError):
    """A tracker's package is not installed (the message names the extra that installs it)."""


def parse_report_to(text: str | None, out: Path | None = None) -> tuple[str, ...]:
    """``tensorboard,wandb`` -> the names, checked now, before any run starts: each importable,
    and with ``out`` (the results folder), MLflow's store opened once."""
    names = tuple(dict.fromkeys(t.strip() for t in (text or "").split(",") if t.strip() and t.strip() != "none"))
    for name in names:
        if name not in TRACKERS:
            raise ConfigError(f"--report-to {name}: unknown tracker; valid: {', '.join(TRACKERS)}, none")
        try:
            importlib.import_module(TRACKERS[name])
        except ImportError:
            raise MissingTracker(f"--report-to {name} needs {TRACKERS[name]}, which is not installed: "
                                 f"pip install 'peft-bench[{name}]'") from None
    if "mlflow" in names and out is not None:
        _mlflow_client(Path(out))
    return names


def mlflow_uri(out: Path) -> str:
    """``$MLFLOW_TRACKING_URI``, else a store in ``out``: sqlite with the full mlflow package (its
    database store needs what mlflow-skinny leaves out), else the file store, switched on for MLflow 3."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    Path(out).mkdir(parents=True, exist_ok=True)
    if _full_mlflow():
        return f"sqlite:///{Path(out).resolve() / 'mlflow.db'}"
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # our default store; inherited by workers
    return (Path(out).resolve() / "mlruns").as_uri()


def _full_mlflow() -> bool:
    """Whether the full ``mlflow`` package is installed (its database store), not only mlflow-skinny."""
    try:
        importlib.metadata.distribution("mlflow")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def _mlflow_client(out: Path) -> Any:
    """A client of the run's store, its experiment looked up: a store MLflow refuses is one line."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    uri = mlflow_uri(out)
    try:
        client = MlflowClient(tracking_uri=uri, registry_uri=uri if uri.startswith("file:") else None)
        client.get_experiment_by_name(os.environ.get("MLFLOW_EXPERIMENT_NAME", PROJECT))
    except (MlflowException, ImportError, OSError) as err:
        hint = ("set MLFLOW_ALLOW_FILE_STORE=true (MLflow 3 refuses file stores without it), or "
                if uri.startswith("file:") or "://" not in uri else "")
        raise ConfigError(f"--report-to mlflow: MLflow cannot open its store {uri} "
                          f"({type(err).__name__}: {str(err).splitlines()[0][:160]}); {hint}point "
                          f"MLFLOW_TRACKING_URI at a server or sqlite:///PATH (needs pip install "
                          f"'peft-bench[mlflow]'), or unset it to use {out}") from None
    return client


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config -> ``{"train.lr": 0.0002, ...}``; lists and None as text (hparams take scalars)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        elif isinstance(value, (bool, int, float, str)):
            out[name] = value
        else:
            out[name] = json.dumps(value, default=str)
    return out


def step_figures(step: dict[str, Any]) -> dict[str, float]:
    """The numbers of one step record, as ``train/<key>``."""
    return {f"train/{k}": float(v) for k, v in step.items()
            if k not in SKIPPED_STEP_KEYS and isinstance(v, (int, float)) and not isinstance(v, bool)}


def final_figures(record: RunRecord) -> dict[str, float]:
    """Every figure the run contributes to the tidy table, as ``<phase>/<task>/<metric>``."""
    return {f"{r['phase']}/{r['task']}/{r['metric']}": float(r["value"])
            for r in record.rows() if isinstance(r.get("value"), (int, float))}


class Tracker(Protocol):
    def log_step(self, step: int, values: dict[str, float]) -> None: ...
    def log_final(self, step: int, values: dict[str, float]) -> None: ...
    def close(self, ok: bool) -> None: ...


class _TensorBoard:
    def __init__(self, out: Path, run_id: str, config: dict[str, Any]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.hparams = flatten(config)
        self.writer = SummaryWriter(log_dir=str(Path(out) / "tensorboard" / run_id))
        self.writer.add_text("config", f"```\n{json.dumps(config, indent=2, default=str)}\n```")

    def log_step(self, step: int, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)

    def log_final(self, step: int, values: dict[str, float]) -> None:
        # hparams with the final figures as their metrics, written beside the run's own events
        self.writer.add_hparams(self.hparams, values, run_name=".", global_step=step)

    def close(self, ok: bool) -> None:
        self.writer.close()


class _Wandb:
    def __init__(self, out: Path, run_id: str, config: dict[str, Any]) -> None:
        import wandb

        folder = os.environ.get("WANDB_DIR") or str(out)
        Path(folder).mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", PROJECT), name=run_id, config=config,
                              dir=folder, reinit="create_new")

    def log_step(self, step: int, values: dict[str, float]) -> None:
        self.run.log(values, step=step)

    def log_final(self, step: int, values: dict[str, float]) -> None:
        self.run.summary.update(values)

    def close(self, ok: bool) -> None:
        self.run.finish(exit_code=0 if ok else 1)


_MLFLOW_KEY = re.compile(r"[^\w\-./ :]")


class _MLflow:
    BATCH = 100  # MLflow's limit of params per log_batch call

    def __init__(self, out: Path, run_id: str, config: dict[str, Any]) -> None:
        from mlflow.entities import Param
        from mlflow.exceptions import MlflowException

        self.client = _mlflow_client(out)
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", PROJECT)
        experiment = self.client.get_experiment_by_name(name)
        try:
            experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(name)
        except MlflowException:  # a parallel run created it first
            experiment_id = self.client.get_experiment_by_name(name).experiment_id
        self.run_id = self.client.create_run(experiment_id, run_name=run_id).info.run_id
        params = [Param(_MLFLOW_KEY.sub("_", k), str(v)[:6000]) for k, v in flatten(config).items()]
        for i in range(0, len(params), self.BATCH):
            self.client.log_batch(self.run_id, params=params[i:i + self.BATCH])

    def _metrics(self, step: int, values: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(_MLFLOW_KEY.sub("_", k), v, now, step) for k, v in values.items()]
        for i in range(0, len(metrics), 1000):  # MLflow's limit of metrics per call
            self.client.log_batch(self.run_id, metrics=metrics[i:i + 1000])

    log_step = _metrics
    log_final = _metrics

    def close(self, ok: bool) -> None:
        self.client.set_terminated(self.run_id, "FINISHED" if ok else "FAILED")


_BACKENDS = {"tensorboard": _TensorBoard, "wandb": _Wandb, "mlflow": _MLflow}


class Trackers:
    """The trackers of one run, fed together: ``log_step`` every step, ``finish`` once at the end.
    ``first_step``: steps already logged (a resumed sequence's kept stages)."""

    def __init__(self, names: tuple[str, ...], out: Path, run_id: str, config: dict[str, Any],
                 first_step: int = 0) -> None:
        self.trackers: list[Tracker] = [_BACKENDS[name](Path(out), run_id, config) for name in names]
        self.next_step = first_step

    def log_step(self, step: dict[str, Any]) -> None:
        """One step record (as written to steps.jsonl), at its 0-based index in the run."""
        values = step_figures(step)
        for tracker in self.trackers:
            tracker.log_step(self.next_step, values)
        self.next_step += 1

    def finish(self, record: RunRecord) -> None:
        """The run's figures (from its record) at the last step, then each tracker run marked
        finished or failed."""
        values = final_figures(record)
        for tracker in self.trackers:
            if values:
                tracker.log_final(max(0, self.next_step - 1), values)
            tracker.close(record.status == "ok")


class StepWriter(Protocol):
    def write(self, step: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class LiveLog:
    """What follows a run while it trains: the step log (``runfolder.StepLog``: ``steps.jsonl``,
    appended and flushed every step) and the trackers asked for."""

    def __init__(self, steps: StepWriter, out: Path, run_id: str, config: dict[str, Any],
                 report_to: tuple[str, ...], first_step: int = 0) -> None:
        """``first_step``: steps already logged (a resumed sequence's kept stages)."""
        self.steps = steps
        self.trackers = Trackers(report_to, out, run_id, config, first_step)

    def step(self, step: dict[str, Any]) -> None:
        self.steps.write(step)
        self.trackers.log_step(step)

    def finish(self, record: RunRecord) -> None:
        self.steps.close()
        self.trackers.finish(record)
