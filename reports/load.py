"""Stored run folders -> one tidy DataFrame plus per-run metadata, for every report.

Reports are built from ``run.json`` files, the source of truth, not from ``results.csv``: a
results folder copied from another machine may carry a stale table, and several folders (one
per ``bench run`` call or machine) must merge into one report. Records are read through the
schema (``harness.records.read_record``: any format written so far, as the current one) and rows
come from ``RunRecord.rows``, so a report and ``bench run``'s table can never disagree on what
a figure is. Derived columns added here:

* ``label``: the method name, plus the hyperparameters that tell its variants apart when the
  same method was run with several configurations (``lora (r=8)`` vs ``lora (r=16)``), so that
  runs are only pooled across seeds, never across configurations;
* ``device``: where the run happened (costs from different devices are not comparable);
* ``reference``: False here; tables set it on rows that are not methods (base model, chance).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from harness.labels import variant_labels
from harness.records import DAMAGED, read_jsonl, read_record
from harness.schema.record import TIDY_COLUMNS, RunRecord

EXTRA_COLUMNS = ["label", "device", "device_type", "reference", "source"]


class ReportError(ValueError):
    """Nothing to report on (no run folders found); printed as one line by the CLI."""


@dataclass
class Run:
    """One run folder: its record (``rec``, and ``record``: the same as ``run.json``'s current
    format), its step log, and where it was read from."""

    run_id: str
    path: Path
    rec: RunRecord
    steps: list[dict[str, Any]] = field(default_factory=list)
    label: str = ""

    def __post_init__(self) -> None:
        self.record: dict[str, Any] = self.rec.to_json()

    @property
    def config(self) -> dict[str, Any]:
        return self.record.get("config", {})

    @property
    def status(self) -> str:
        return str(self.record.get("status", "unknown"))

    @property
    def device(self) -> str:
        dev = self.record.get("environment", {}).get("device", {})
        return f"{dev.get('type', '?')}: {dev.get('name', '?')}"


@dataclass
class Results:
    """Everything a report needs: the tidy rows of finished runs and every run's metadata."""

    df: pd.DataFrame
    runs: dict[str, Run]
    notes: list[str]

    def ok_runs(self) -> list[Run]:
        return [r for r in self.runs.values() if r.status == "ok"]


def find_run_files(root: Path) -> list[Path]:
    """``run.json`` files under a results folder, a ``runs/`` folder, or a single run folder."""
    root = Path(root)
    if (root / "run.json").is_file():
        return [root / "run.json"]
    return sorted(root.rglob("run.json"))


def assign_labels(runs: list[Run]) -> None:
    """Label each run as results.csv does (``harness.labels``): the method, plus the keys that tell
    its variants apart."""
    labels = variant_labels({run.run_id: run.config for run in runs})
    for run in runs:
        run.label = labels[run.run_id]


def load_results(dirs: list[Path]) -> Results:
    """Read every run folder under ``dirs``; duplicates of one run id keep the latest finished copy."""
    notes: list[str] = []
    runs: dict[str, Run] = {}
    for root in dirs:
        if not Path(root).exists():
            raise ReportError(f"{root}: no such folder")
        for path in find_run_files(root):
            record = read_record(path, then="left out of the report")
            if record is None:
                notes.append(f"skipped {path}: damaged or unreadable")
                continue
            run = Run(record.run_id, path.parent, record)
            run.steps = read_jsonl(path.parent / "steps.jsonl", then="step plots use the whole lines")
            old = runs.get(run.run_id)
            if old is not None:
                keep = max((old, run), key=lambda r: (r.status == "ok", str(r.record.get("ended", ""))))
                notes.append(f"run {run.run_id} found twice ({old.path}, {run.path}); kept {keep.path}")
                run = keep
            runs[run.run_id] = run
    if not runs:
        raise ReportError(f"no run folders (run.json) under {', '.join(str(d) for d in dirs)}")
    assign_labels(list(runs.values()))
    rows: list[dict[str, Any]] = []
    for run in runs.values():
        if run.status != "ok":
            notes.append(f"run {run.run_id} is {run.status}; left out of tables and plots")
            continue
        extra = {"label": run.label, "device": run.device, "device_type": run.device.split(":")[0],
                 "reference": False, "source": str(run.path)}
        try:
            rows.extend({**row, **extra} for row in run.rec.rows())
        except DAMAGED as err:
            notes.append(f"skipped {run.path}: damaged record ({type(err).__name__}: {err})")
    df = pd.DataFrame(rows, columns=TIDY_COLUMNS + EXTRA_COLUMNS)
    return Results(df=df, runs=runs, notes=notes)


def trained_on(df: pd.DataFrame) -> pd.Series:
    """Per row: whether the row's task was one the run trained on (not a retention task)."""
    return pd.Series([t in str(tt).split("+") for t, tt in zip(df.task, df.train_tasks)], index=df.index, dtype=bool)


RANK_KEYS = ("ranks", "allocated_ranks", "rank_pattern")


def allocated_ranks(record: dict[str, Any]) -> dict[str, int]:
    """Module name -> rank from a run's ``method_record`` ({} when the method allocates none).

    Sensitivity-LoRA stores its allocation; peft tuners store ``rank_pattern`` (AdaLoRA's is a
    boolean mask per module, whose count of kept entries is the rank). Regex escapes of peft
    keys are removed so names read as module paths.
    """
    method_record = record.get("method_record") or {}
    for key in RANK_KEYS:
        value = method_record.get(key)
        if not isinstance(value, dict):
            continue
        ranks = {}
        for name, rank in value.items():
            if isinstance(rank, list):
                rank = sum(bool(x) for x in rank)
            if isinstance(rank, (int, float)) and not isinstance(rank, bool):
                ranks[str(name).replace("\\", "").strip("^$")] = int(rank)
        if ranks:
            return ranks
    return {}


def split_module(name: str) -> tuple[str, str]:
    """``model.layers.3.self_attn.q_proj`` -> ("3", "q_proj"); a module outside layers -> ("-", name)."""
    parts = name.split(".")
    digits = [i for i, p in enumerate(parts) if p.isdigit()]
    return (parts[digits[-1]], parts[-1]) if digits else ("-", parts[-1])


def reselections(record: dict[str, Any]) -> list[dict[str, Any]]:
    """LoSiA's re-selection log as dicts with at least ``step`` and ``layer`` ([] when absent).

    The method stores rows as lists with their field names in ``reselection_fields`` (compact
    in run.json); dict rows are accepted too.
    """
    method_record = record.get("method_record") or {}
    log = method_record.get("reselections") or method_record.get("reselection_log") or []
    fields = method_record.get("reselection_fields") or ["step", "layer"]
    rows = [dict(zip(fields, e)) if isinstance(e, (list, tuple)) else e for e in log]
    return [r for r in rows if isinstance(r, dict) and "step" in r and "layer" in r]
