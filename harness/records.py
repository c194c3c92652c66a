"""Run folders, atomic writes, and the tidy table rebuilt from them.

Layout under the output folder (default ``results/``)::

    runs/<run_id>/run.json               config, status, timings, environment, checksums
    runs/<run_id>/steps.jsonl            one line per optimizer step
    runs/<run_id>/samples/<phase>/<task>.jsonl   per-sample predictions
    cache/eval/<key>.json                "before" evaluations shared by every method's run
    results.csv, results.parquet         the tidy table, one row per (run, task, phase, metric)

Every file is written to a temporary name in the same folder and renamed into place, so an
interrupted run never leaves a half-written file behind, and ``run.json`` is written last with
``status: ok``: a folder without it (or with ``failed``/``running``) is simply run again.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from harness import metrics

TIDY_COLUMNS = [
    "run_id", "model", "method", "train_tasks", "seed", "task", "phase", "metric", "value", "stderr", "n",
    "unit", "protocol", "backend", "prompt", "shots", "eval_limit", "data_sha256", "chance", "status",
]


_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        with _suppress():
            os.unlink(tmp)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def atomic_write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, default=str) + "\n" for r in rows))


class _suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return True


def read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def run_dir(out: Path, run_id: str) -> Path:
    return Path(out) / "runs" / run_id


def file_name(task_name: str) -> str:
    """A task name as a file name: ``file:/a/b.json`` and ``lm-eval:x`` names carry / and :."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in task_name)
    if safe == task_name:
        return safe
    return f"{safe[-60:].lstrip('_')}-{hashlib.sha256(task_name.encode()).hexdigest()[:8]}"


def samples_path(folder: Path, phase: str, task_name: str) -> Path:
    """``runs/<run_id>/samples/<phase>/<task>.jsonl``."""
    return Path(folder) / "samples" / phase / f"{file_name(task_name)}.jsonl"


def run_status(out: Path, run_id: str) -> str | None:
    """``ok`` / ``failed`` / ``running`` for an existing run folder, None if there is none."""
    path = run_dir(out, run_id) / "run.json"
    if not path.exists():
        return None
    try:
        return read_json(path).get("status")
    except (OSError, json.JSONDecodeError):
        return None


def tidy_rows(record: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of the tidy table for one run.json (accuracies per task and phase, costs per run).

    Units are the catalogue's (``harness.metrics``); derived and cost figures carry theirs in
    run.json, written from the same catalogue.
    """
    cfg = record["config"]
    base = {
        "run_id": record["run_id"],
        "model": cfg["model"],
        "method": cfg["method"],
        "train_tasks": "+".join(cfg["train_tasks"]),
        "seed": cfg["seed"],
        "protocol": cfg.get("protocol", "likelihood"),
        "backend": cfg.get("backend", "native"),
        "eval_limit": cfg["train"]["eval_limit"],
        "status": record["status"],
    }
    rows = []
    for ev in record.get("evals", []):
        for metric in ev["metrics"]:
            rows.append({
                **base, "task": ev["task"], "phase": ev["phase"], "metric": metric["name"],
                "value": metric["value"], "stderr": metric.get("stderr"), "n": metric.get("n"),
                "unit": metrics.unit(metric["name"]), "data_sha256": ev.get("data_sha256"), "chance": ev.get("chance"),
                # how it was measured: an lm-eval:NAME task reports its own protocol and shots
                "protocol": ev.get("protocol", base["protocol"]), "backend": ev.get("backend", base["backend"]),
                "prompt": ev.get("prompt"), "shots": ev.get("shots"),
            })
    for d in record.get("derived", []):  # forgetting, BWT, final average accuracy, LM-loss change
        rows.append({**base, "task": d["task"], "phase": d["phase"], "metric": d["metric"], "value": d["value"],
                     "stderr": d.get("stderr"), "n": d.get("n"), "unit": d.get("unit", ""), "data_sha256": None,
                     "chance": None})
    for name, (value, unit) in record.get("costs", {}).items():
        rows.append({**base, "task": base["train_tasks"], "phase": metrics.TRAIN, "metric": name, "value": value,
                     "stderr": None, "n": None, "unit": unit, "data_sha256": None, "chance": None})
    if record["status"] != "ok" and not rows:
        rows.append({**base, "task": base["train_tasks"], "phase": metrics.TRAIN, "metric": "status", "value": None,
                     "stderr": None, "n": None, "unit": "", "data_sha256": None, "chance": None})
    return rows


def rebuild_table(out: Path) -> pd.DataFrame:
    """Rebuild ``results.csv`` and ``results.parquet`` from every run folder under ``out``."""
    out = Path(out)
    rows: list[dict[str, Any]] = []
    for path in sorted((out / "runs").glob("*/run.json")):
        try:
            rows.extend(tidy_rows(read_json(path)))
        except (OSError, json.JSONDecodeError, KeyError):
            continue  # a run folder being written right now, or not ours
    df = pd.DataFrame(rows, columns=TIDY_COLUMNS)
    atomic_write_text(out / "results.csv", df.to_csv(index=False))
    fd, tmp = tempfile.mkstemp(prefix=".results.parquet.", dir=out)
    os.close(fd)
    try:
        df.to_parquet(tmp, index=False)
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, out / "results.parquet")
    except BaseException:
        with _suppress():
            os.unlink(tmp)
        raise
    return df
