"""A run's folder as the driver writes it: the one builder of ``run.json`` and the one place it is saved.

``run.json`` is written when the run starts (``running``), after every finished stage of a
sequence (with a checkpoint, so an interrupted sequence resumes there) and when it ends: ``ok``,
or ``failed`` with the error. Every failure is recorded, out of memory and Ctrl-C included: a
failed run is a result, and the rest of the grid goes on.
"""
from __future__ import annotations

import contextlib
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import torch

from harness import metrics, records
from harness.config import RunConfig
from harness.environment import environment
from harness.models import model_info

CHECKPOINT = "checkpoint.pt"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class RunFolder:
    """``runs/<run_id>/``: the record being built, the step log, per-sample files, the stage checkpoint."""

    def __init__(self, cfg: RunConfig, out: Path, device: torch.device, **extra: Any) -> None:
        """``extra``: fields this kind of run records besides the common ones (a training run's command)."""
        self.path = records.run_dir(out, cfg.run_id)
        self.record: dict[str, Any] = {"run_id": cfg.run_id, "status": "running", "config": cfg.resolved(),
                                       "started": _now(), "model_note": model_info(cfg.model).note,
                                       "environment": environment(device), **extra}
        self.steps: list[dict[str, Any]] = []
        self.stages_done = 0

    def resume(self) -> None:
        """Continue an interrupted sequence after its last finished stage, if that stage's checkpoint
        survived: keep its stages, their evaluations and their steps; the interrupted stage runs again."""
        previous = self._resumable()
        if previous is None:
            return
        done = len(previous["stages"])
        finished = {metrics.BEFORE, *(metrics.stage(k) for k in range(1, done + 1))}
        self.record.update(stages=previous["stages"], evals=[e for e in previous["evals"] if e["phase"] in finished],
                           resumed_after_stage=done)
        self.steps = [s for s in records.read_jsonl(self.path / "steps.jsonl") if s.get("stage", 0) <= done]
        self.stages_done = done

    def _resumable(self) -> dict[str, Any] | None:
        path = self.path / "run.json"
        if not (path.exists() and (self.path / CHECKPOINT).exists()):
            return None
        previous = records.read_json(path)
        return previous if previous.get("stages") and previous.get("status") != "ok" else None

    @contextlib.contextmanager
    def recording(self) -> Iterator[None]:
        """Save the record as ``running``, run the block, then save its outcome. A failure is recorded,
        not raised, except Ctrl-C, which is recorded and then re-raised to stop the grid."""
        self.save()
        try:
            yield
            self.record["status"] = "ok"
            (self.path / CHECKPOINT).unlink(missing_ok=True)
        except BaseException as err:  # every failure, including OOM and KeyboardInterrupt
            self.record["status"] = "failed"
            self.record["error"] = {"type": type(err).__name__, "message": str(err)[:2000],
                                    "traceback": traceback.format_exc()[-8000:]}
            if isinstance(err, KeyboardInterrupt):
                raise
        finally:
            self.record["ended"] = _now()
            self.save()

    def add_eval(self, summary: dict[str, Any], samples: list[dict[str, Any]]) -> None:
        """One task's evaluation: its summary in the record, its per-sample results in their own file."""
        self.record.setdefault("evals", []).append(summary)
        records.atomic_write_jsonl(records.samples_path(self.path, summary["phase"], summary["task"]), samples)

    def add_steps(self, steps: list[dict[str, Any]], stage: int | None) -> None:
        """A stage's optimizer steps, tagged with the stage number in a sequence."""
        self.steps.extend({**s, "stage": stage} if stage else s for s in steps)

    def finish_stage(self, stage: int, tasks: tuple[str, ...], steps: int, train_time_s: float,
                     state: dict[str, Any] | None) -> None:
        """A sequence stage is done: record it; with ``state`` (more stages follow), checkpoint and save,
        so an interruption from here on resumes after this stage."""
        self.record.setdefault("stages", []).append({"stage": stage, "tasks": list(tasks), "steps": steps,
                                                     "train_time_s": train_time_s})
        if state is not None:
            tmp = self.path / f".{CHECKPOINT}.tmp"
            torch.save(state, tmp)
            tmp.replace(self.path / CHECKPOINT)
            self.save()

    def checkpoint(self, device: torch.device) -> dict[str, Any]:
        """The state saved after the last finished stage (adapters, subnet indices, weights)."""
        return torch.load(self.path / CHECKPOINT, map_location=device)

    def save(self) -> None:
        """Write the step log (if any) and then ``run.json``, each atomically."""
        if self.steps:
            records.atomic_write_jsonl(self.path / "steps.jsonl", self.steps)
        records.atomic_write_json(self.path / "run.json", self.record)
