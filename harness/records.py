"""Run folders, atomic writes, and the tidy table rebuilt from them.

Layout under the output folder (default ``results/``)::

    runs/<run_id>/run.json               config, status, timings, environment, checksums
    runs/<run_id>/steps.jsonl            one line per optimizer step
    runs/<run_id>/samples/<phase>/<task>.jsonl   per-sample predictions
    cache/eval/<key>.json                "before" evaluations shared by every method's run
    results.csv, results.parquet         the tidy table, one row per (run, task, phase, metric)

Every file is written to a temporary name in the same folder and renamed into place, so an
interrupted run never leaves a half-written file behind, and ``run.json`` is written last with
``status: ok``: a folder without it (or with ``failed``/``running``) is simply run again. Records
are read back through ``harness.safe_io``: a damaged one is reported and read as absent.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from harness import locks, metrics, safe_io
from harness.labels import variant_labels
from harness.safe_io import read_jsonl, read_run  # noqa: F401 - the tolerant readers, re-exported

TIDY_COLUMNS = [
    "run_id", "model", "method", "train_tasks", "seed", "task", "phase", "metric", "value", "stderr", "n",
    "unit", "protocol", "backend", "prompt", "shots", "chat_template", "eval_limit", "data_sha256", "chance", "status",
]

# the run's settings, one column each beside the figures (plus the methods' size keys, e.g. r,
# rank_factor): "accuracy by lr" is a groupby on results.csv, no join with every run.json
SETTING_COLUMNS = ["label", "lr", "batch_size", "steps", "max_length", "device", "world_size", "nodes", "git_commit"]
INTEGER_COLUMNS = ("seed", "n", "eval_limit", "shots", "batch_size", "steps", "max_length", "world_size", "nodes")

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
    record = read_run(run_dir(out, run_id) / "run.json")
    return record["status"] if record else None


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
                "prompt": ev.get("prompt"), "shots": ev.get("shots"), "chat_template": ev.get("chat_template", False),
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


def _size_keys(method: str) -> tuple[str, ...]:
    from methods import registry

    try:
        return registry.get(method).size_keys
    except registry.UnknownMethod:  # eval-only runs (method none), or a method not installed here
        return ()


def run_settings(record: dict[str, Any]) -> dict[str, Any]:
    """The run's settings as columns: training budget (none for an evaluation-only run), the
    method's size keys, where it ran (on how many processes and machines) and at which commit."""
    cfg, env = record["config"], record.get("environment", {})
    dev = env.get("device", {})
    team = record.get("distributed", {})  # absent: one process
    out: dict[str, Any] = {"device": f"{dev['type']}: {dev.get('name')}" if dev else None,
                           "world_size": team.get("world_size", 1), "nodes": team.get("nodes", 1),
                           "git_commit": env.get("git_commit")}
    if cfg.get("train_tasks"):
        train = cfg["train"]
        done = record.get("costs", {}).get("steps")
        out.update(lr=train["lr"], batch_size=train["batch_size"], max_length=train["max_length"],
                   steps=int(done[0]) if done else train["max_steps"] or None)
        out.update({k: cfg["method_config"].get(k) for k in _size_keys(cfg["method"])})
    return out


def _integers(df: pd.DataFrame, rows: list[dict[str, Any]], columns: Iterable[str]) -> pd.DataFrame:
    """Counts stay integers (pandas makes a column with gaps float): nullable Int64 for every
    column whose recorded values are all ints."""
    for col in columns:
        values = [r[col] for r in rows if r.get(col) is not None]
        if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            df[col] = df[col].astype("Int64")
    return df


def rebuild_table(out: Path) -> pd.DataFrame:
    """Rebuild ``results.csv`` and ``results.parquet`` from every run folder under ``out``: the
    tidy rows of every run, each with its run's settings and variant label (as reports label it).

    Under the table lock (a concurrent rebuild waits): the temporary files a killed rebuild left
    are removed, both tables are written in full to temporary names, and only then renamed into
    place, so a failed write (disk full) leaves the previous pair as it was. A damaged run
    folder is reported and left out. Raises ``safe_io.OutputError`` when the tables cannot be written.
    """
    out = Path(out)
    try:
        with locks.table_lock(out):
            safe_io.remove_temps(out)
            found = _records(out)
            labels = variant_labels({record["run_id"]: record["config"] for record in found.values()})
            rows: list[dict[str, Any]] = []
            for path, record in found.items():
                rows.extend(_rows_or_none(path, record, labels[record["run_id"]]) or [])
            sizes = sorted({k for r in rows for k in r} - set(TIDY_COLUMNS) - set(SETTING_COLUMNS))
            df = pd.DataFrame(rows, columns=TIDY_COLUMNS + SETTING_COLUMNS + sizes)
            df = _integers(df, rows, [*INTEGER_COLUMNS, *sizes])
            _write_tables(out, df)
    except OSError as err:
        raise safe_io.output_error(err, out) or err from None
    return df


def _records(out: Path) -> dict[Path, dict[str, Any]]:
    """Every whole run record under ``out`` (a damaged one is reported and left out)."""
    found = {}
    for path in sorted((out / "runs").glob("*/run.json")):
        record = read_run(path, then="left out of the table")
        if record is not None:
            found[path] = record
    return found


def _rows_or_none(path: Path, record: dict[str, Any], label: str) -> list[dict[str, Any]] | None:
    """A run's rows with its settings, or None (reported) when its record is damaged below the top level."""
    try:
        settings = {**run_settings(record), "label": label}
        return [{**row, **settings} for row in tidy_rows(record)]
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        safe_io.warn(f"{path}: damaged ({type(err).__name__}: {err}); left out of the table")
        return None


def _write_tables(out: Path, df: pd.DataFrame) -> None:
    temps = []
    try:
        for name, write in (("results.parquet", lambda p: df.to_parquet(p, index=False)),
                            ("results.csv", lambda p: df.to_csv(p, index=False))):
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=out)
            os.close(fd)
            temps.append((tmp, out / name))
            write(tmp)
            os.chmod(tmp, 0o666 & ~_UMASK)
        for tmp, target in temps:
            os.replace(tmp, target)
    except BaseException:
        for tmp, _ in temps:
            with _suppress():
                os.unlink(tmp)
        raise


class StepLog:
    """``steps.jsonl`` as training goes: each step appended and flushed at once, so a long run can
    be followed (``tail -f``) and a killed one keeps the steps it took.

    Opening rewrites the file atomically with ``kept`` (the steps of stages a resumed sequence
    does not train again); ``write`` appends one line.
    """

    def __init__(self, path: Path, kept: Iterable[dict[str, Any]] = ()) -> None:
        atomic_write_jsonl(Path(path), kept)
        self.fh = open(path, "a", encoding="utf-8")

    def write(self, step: dict[str, Any]) -> None:
        self.fh.write(json.dumps(step, default=str) + "\n")
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()
