"""Where a results folder keeps what, reading run records back, and the tidy table rebuilt from them.

Layout under the output folder (default ``results/``)::

    runs/<run_id>/run.json               config, status, timings, environment, checksums
    runs/<run_id>/steps.jsonl            one line per optimizer step
    runs/<run_id>/samples/<phase>/<task>.jsonl   per-sample predictions
    cache/eval/<key>.json                "before" evaluations shared by every method's run
    results.csv, results.parquet         the tidy table, one row per (run, task, phase, metric)

A run folder is written only by ``harness.runfolder`` (atomically, ``run.json`` last with
``status: ok``: a folder without it, or with ``failed``/``running``, is simply run again).
Records are read back through ``read_record`` (``harness.safe_io`` plus the schema): a damaged
one is reported and read as absent.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from harness import locks, safe_io
from harness.labels import variant_labels
from harness.safe_io import read_jsonl, read_run  # noqa: F401 - the tolerant readers, re-exported
from harness.schema.record import TIDY_COLUMNS, RunRecord

# the run's settings, one column each beside the figures (plus the methods' size keys, e.g. r,
# rank_factor): "accuracy by lr" is a groupby on results.csv, no join with every run.json
SETTING_COLUMNS = ["label", "lr", "batch_size", "steps", "max_length", "device", "world_size", "nodes", "git_commit"]
INTEGER_COLUMNS = ("seed", "n", "eval_limit", "shots", "batch_size", "steps", "max_length", "num_beams",
                   "max_new_tokens", "world_size", "nodes")
DAMAGED = (KeyError, TypeError, ValueError, AttributeError)  # what a record damaged below its top level raises


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


def read_record(path: Path, then: str = "treated as not done (it will run again)") -> RunRecord | None:
    """The ``run.json`` at ``path`` as a ``RunRecord`` (any format written so far), or None when it
    is missing or damaged (reported once, with ``then``)."""
    data = read_run(path, then=then)
    if data is None:
        return None
    try:
        return RunRecord.from_json(data)
    except DAMAGED as err:
        safe_io.warn(f"{path}: damaged ({type(err).__name__}: {err}); {then}")
        return None


def _size_keys(method: str) -> tuple[str, ...]:
    from methods import registry

    try:
        return registry.get(method).size_keys
    except registry.UnknownMethod:  # eval-only runs (method none), or a method not installed here
        return ()


def run_settings(record: RunRecord) -> dict[str, Any]:
    """The run's settings as columns: training budget (none for an evaluation-only run), the
    method's size keys, where it ran (on how many processes and machines) and at which commit."""
    cfg, env = record.config, record.environment
    dev = env.get("device", {})
    team = record.distributed or {}  # absent: one process
    out: dict[str, Any] = {"device": f"{dev['type']}: {dev.get('name')}" if dev else None,
                           "world_size": team.get("world_size", 1), "nodes": team.get("nodes", 1),
                           "git_commit": env.get("git_commit")}
    if cfg.get("train_tasks"):
        train = cfg["train"]
        done = record.cost("steps")
        out.update(lr=train["lr"], batch_size=train["batch_size"], max_length=train["max_length"],
                   steps=int(done) if done else train["max_steps"] or None)
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
            labels = variant_labels({record.run_id: record.config for record in found.values()})
            rows: list[dict[str, Any]] = []
            for path, record in found.items():
                rows.extend(_rows_or_none(path, record, labels[record.run_id]) or [])
            sizes = sorted({k for r in rows for k in r} - set(TIDY_COLUMNS) - set(SETTING_COLUMNS))
            df = pd.DataFrame(rows, columns=TIDY_COLUMNS + SETTING_COLUMNS + sizes)
            df = _integers(df, rows, [*INTEGER_COLUMNS, *sizes])
            _write_tables(out, df)
    except OSError as err:
        raise safe_io.output_error(err, out) or err from None
    return df


def _records(out: Path) -> dict[Path, RunRecord]:
    """Every whole run record under ``out`` (a damaged one is reported and left out)."""
    found = {}
    for path in sorted((out / "runs").glob("*/run.json")):
        record = read_record(path, then="left out of the table")
        if record is not None:
            found[path] = record
    return found


def _rows_or_none(path: Path, record: RunRecord, label: str) -> list[dict[str, Any]] | None:
    """A run's rows with its settings, or None (reported) when its record is damaged below the top level."""
    try:
        settings = {**run_settings(record), "label": label}
        return [{**row, **settings} for row in record.rows()]
    except DAMAGED as err:
        safe_io.warn(f"{path}: damaged ({type(err).__name__}: {err}); left out of the table")
        return None


def _write_tables(out: Path, df: pd.DataFrame) -> None:
    """Both tables written in full to temporary names, then renamed: a failed write leaves the old pair."""
    with safe_io.atomic(out / "results.csv") as csv, safe_io.atomic(out / "results.parquet") as parquet:
        df.to_parquet(parquet, index=False)
        df.to_csv(csv, index=False)
