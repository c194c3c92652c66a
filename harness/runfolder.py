"""A run's folder: the only writer of ``runs/<run_id>/`` (a test checks no other module writes there).

``run.json`` is written when the run starts (``running``), after every finished stage of a
sequence (with a checkpoint, so an interrupted sequence resumes there) and when it ends: ``ok``,
or ``failed`` with the error. Every failure is recorded, out of memory and Ctrl-C included: a
failed run is a result, and the rest of the grid goes on. A run whose process died before it
could write its outcome is recorded here too (``settle``).

The record is a ``harness.schema.record.RunRecord`` that the driver's steps fill; the step log,
per-sample files, the stage checkpoint, the saved model and a method's own files
(``MethodFiles``: LoSiA's ``subnets.jsonl``) are written through ``RunFolder`` as well, so a
``--force`` rerun starts every one of them fresh instead of appending after stale lines.
"""
from __future__ import annotations

import contextlib
import json
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch

from harness import locks, metrics, records, safe_io
from harness.config import RunConfig
from harness.environment import environment
from harness.models import model_info
from harness.schema.record import BUSY, FAILED, OK, Evaluation, RunRecord
from harness.trackers import LiveLog

CHECKPOINT = "checkpoint.pt"
RECORD, STEPS = "run.json", "steps.jsonl"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class StepLog:
    """``steps.jsonl`` as training goes: each step appended and flushed at once, so a long run can
    be followed (``tail -f``) and a killed one keeps the steps it took.

    Opening rewrites the file atomically with ``kept`` (the steps of stages a resumed sequence
    does not train again); ``write`` appends one line.
    """

    def __init__(self, path: Path, kept: Iterable[dict[str, Any]] = ()) -> None:
        safe_io.write_jsonl(Path(path), kept)
        self.fh = open(path, "a", encoding="utf-8")

    def write(self, step: dict[str, Any]) -> None:
        self.fh.write(json.dumps(step, default=str) + "\n")
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()


class MethodFiles:
    """A method's own files in the run folder (``methods.base.Artifacts``): lines appended to a
    named file. A file's first append in this run replaces what an earlier run left there
    (``fresh``), so a rerun never appends after stale lines; a resumed sequence keeps the earlier
    stages' lines (``fresh=False``)."""

    def __init__(self, folder: Path, fresh: bool = True) -> None:
        self.folder, self.fresh = Path(folder), fresh
        self._opened: set[str] = set()

    def append(self, name: str, lines: Iterable[str]) -> None:
        if Path(name).name != name or name in (RECORD, STEPS, CHECKPOINT):
            raise ValueError(f"a method file is a plain name other than the run's own files, got {name!r}")
        mode = "a" if name in self._opened or not self.fresh else "w"
        self._opened.add(name)
        self.folder.mkdir(parents=True, exist_ok=True)
        with (self.folder / name).open(mode, encoding="utf-8") as fh:
            fh.writelines(line if line.endswith("\n") else line + "\n" for line in lines)


class RunFolder:
    """``runs/<run_id>/``: the record being built, the step log, per-sample files, the stage checkpoint."""

    def __init__(self, cfg: RunConfig, out: Path, device: torch.device, report_to: tuple[str, ...] = (),
                 command: str | None = None) -> None:
        """``command``: the command line a training run records; ``report_to``: the trackers a
        training run feeds (``harness.trackers``)."""
        self.out, self.trains, self.report_to = Path(out), bool(cfg.train_tasks), report_to
        self.live: LiveLog | None = None
        self.path = records.run_dir(out, cfg.run_id)
        self.record = RunRecord(run_id=cfg.run_id, status="running", config=cfg.resolved(), started=_now(),
                                model_note=model_info(cfg.model).note, environment=environment(device),
                                command=command)
        self.steps: list[dict[str, Any]] = []
        self.stages_done = 0
        self.method_files = MethodFiles(self.path)
        self._state: dict[str, Any] | None = None  # the checkpoint a resumed sequence continues from

    def resume(self) -> None:
        """Continue an interrupted sequence after its last finished stage, if that stage's checkpoint
        survived: keep its stages, their evaluations and their steps; the interrupted stage runs again."""
        previous = self._resumable()
        if previous is None:
            return
        done = len(previous.stages)
        finished = {metrics.BEFORE, *(metrics.stage(k) for k in range(1, done + 1))}
        self.record.stages = previous.stages
        self.record.evals = [e for e in previous.evals if e.phase in finished]
        self.record.resumed_after_stage = done
        self.steps = [s for s in records.read_jsonl(self.path / STEPS) if s.get("stage", 0) <= done]
        self.stages_done = done
        self.method_files = MethodFiles(self.path, fresh=False)

    def _resumable(self) -> RunRecord | None:
        """The interrupted record, if it and its checkpoint are whole; a damaged checkpoint is
        reported and removed, and the sequence starts over."""
        if not (self.path / CHECKPOINT).exists():
            return None
        previous = records.read_record(self.path / RECORD, then="the sequence starts over")
        if not (previous and previous.stages and previous.status != OK):
            return None
        self._state = safe_io.load_checkpoint(self.path / CHECKPOINT, "cpu")
        return previous if self._state is not None else None

    @contextlib.contextmanager
    def recording(self) -> Iterator[None]:
        """Save the record as ``running``, run the block, then save its outcome. A failure is recorded,
        not raised, except Ctrl-C, which is recorded and then re-raised to stop the grid, and a full
        or unwritable ``--out``, recorded if it can be and raised as ``safe_io.OutputError``."""
        safe_io.remove_temps(self.path)  # what a killed writer left (the caller holds the folder's lock)
        self.save()
        full = None
        try:
            if self.trains:  # steps.jsonl from now on written as each step is taken, and the trackers
                self.live = LiveLog(StepLog(self.path / STEPS, self.steps), self.out, self.record.run_id,
                                    self.record.config, self.report_to, len(self.steps))
            yield
            self.record.status = OK
            (self.path / CHECKPOINT).unlink(missing_ok=True)
        except BaseException as err:  # every failure, including OOM and KeyboardInterrupt
            full = safe_io.output_error(err, self.path.parent.parent) if isinstance(err, OSError) else None
            self.record.status = FAILED
            self.record.error = {"type": type(full or err).__name__, "message": str(full or err)[:2000],
                                 "traceback": traceback.format_exc()[-8000:]}
            if isinstance(err, KeyboardInterrupt):
                raise
        finally:
            self.record.ended = _now()
            if self.live is not None:
                try:
                    self.live.finish(self.record)
                except Exception as err:  # noqa: BLE001 - a tracker's failure must not lose the record
                    self.record.tracker_error = f"{type(err).__name__}: {str(err)[:500]}"
            self.save()
        if full:
            raise full

    def add_eval(self, summary: Evaluation, samples: list[dict[str, Any]]) -> None:
        """One task's evaluation: its summary in the record, its per-sample results in their own file."""
        self.record.evals.append(summary)
        safe_io.write_jsonl(records.samples_path(self.path, summary.phase, summary.task), samples)

    def add_step(self, step: dict[str, Any], stage: int | None) -> None:
        """One optimizer step as it is taken, tagged with the stage number in a sequence: into
        steps.jsonl at once (flushed) and to the trackers."""
        tagged = {**step, "stage": stage} if stage else step
        self.steps.append(tagged)
        if self.live is not None:
            self.live.step(tagged)

    def finish_stage(self, stage: int, tasks: tuple[str, ...], steps: int, train_time_s: float,
                     state: dict[str, Any] | None) -> None:
        """A sequence stage is done: record it; with ``state`` (more stages follow), checkpoint and save,
        so an interruption from here on resumes after this stage."""
        self.record.stages.append({"stage": stage, "tasks": list(tasks), "steps": steps,
                                   "train_time_s": train_time_s})
        if state is not None:
            with safe_io.atomic(self.path / CHECKPOINT) as tmp:
                torch.save(state, tmp)
            self.save()

    def checkpoint(self) -> dict[str, Any]:
        """The state saved after the last finished stage (adapters, subnet indices, weights), as
        read when the sequence resumed (tensors only: ``safe_io.load_checkpoint``)."""
        assert self._state is not None, "only a resumed sequence has a checkpoint"
        return self._state

    def saved_model(self, name: str) -> Path:
        """Where the trained model is saved (``harness.export`` replaces the folder atomically)."""
        if Path(name).name != name:
            raise ValueError(f"a saved model is a folder directly in the run folder, got {name!r}")
        return self.path / name

    def save(self) -> None:
        """Write ``run.json`` atomically (and the step log, unless it is being written live)."""
        if self.steps and self.live is None:
            safe_io.write_jsonl(self.path / STEPS, self.steps)
        safe_io.write_json(self.path / RECORD, self.record.to_json())


def write_run_files(folder: Path, record: RunRecord, samples: dict[tuple[str, str], list[dict[str, Any]]],
                    steps: list[dict[str, Any]] | None = None) -> None:
    """A whole run folder at once, from a record made elsewhere (imports, test factories): the
    per-sample files ((phase, task) -> rows), the step log, then ``run.json``."""
    for (phase, task), rows in samples.items():
        safe_io.write_jsonl(records.samples_path(folder, phase, task), rows)
    if steps is not None:
        safe_io.write_jsonl(Path(folder) / STEPS, steps)
    safe_io.write_json(Path(folder) / RECORD, record.to_json())


def settle(cfg: RunConfig, out: Path, how: str) -> dict[str, Any]:
    """The record of a run executed elsewhere (a worker process, a cluster job); a run that left
    none (or left ``running``) is recorded as failed with ``how``, unless another process is
    doing it right now (``status: busy``)."""
    path = records.run_dir(out, cfg.run_id) / RECORD
    if locks.run_busy(path.parent):
        return {"run_id": cfg.run_id, "status": BUSY, "config": cfg.resolved()}
    record = records.read_record(path, then="recorded again") or RunRecord(cfg.run_id, "running", cfg.resolved())
    if record.status not in (OK, FAILED):
        why = how or f"the run recorded no outcome in {path.parent} (is --out on a filesystem every node shares?)"
        record.status, record.error = FAILED, {"type": "WorkerDied", "message": why}
        try:
            safe_io.write_json(path, record.to_json())
        except OSError as err:
            raise safe_io.output_error(err, out) or err from None
    return record.to_json()
