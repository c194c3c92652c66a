"""Tables built from the tidy rows: one generic ``pivot`` and the paper layouts on top of it.

Every table goes through ``pivot``, so every table gets the same guarantees: a column never
silently mixes numbers measured differently (``drop_mixed``), cells are pooled only across
seeds of one configuration (rows group on ``label``, see ``reports.load``), several seeds show
as mean ± sample std, and a column's best is bold only when a test says it is better than the
runner-up (``mark_best``, ``reports.significance``), among method rows only (the base model and
chance are references, not competitors). Rendering lives in ``reports.render``.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Callable

import pandas as pd

from harness import forgetting, metrics
from harness.schema import settings
from harness.machineload import busier_than_cores, load_note
from harness.metrics import AFTER, BEFORE, EVAL, TRAIN, Format, fixed, human_count, stage_number
from methods.targets import DECODER_LINEARS
from reports.chance import check
from reports.comparison import Paired, Spread, difference, suite_difference
from reports.evidence import accuracy_evidence, interval, pooled, run_step_times
from reports.load import Results, ReportError, Run, allocated_ranks, split_module, trained_on
from reports.significance import (BEST, FOOTNOTE_START, TIE, UNTESTED, Evidence, Exact, Items, Seeds, StepSpread,
                                  footnote, mark_column, shared)
from reports.stats import pick_runs
from tasks.registry import report_headers, report_order, suites

KEY_HEADERS = {"model": "Model", "label": "Method", "task": "Task", "seed": "Seed", "device": "Device",
               "layer": "Layer", "metric": "Metric", "phase": "Phase"}
EVAL_COMPAT = ["metric", *settings.MEASURED_BY]
COST_COMPAT = ["metric", "unit", "device"]  # a step time from another device is another quantity
BASE_LABEL = "base (before training)"

MARKS = {TIE: " ≈", UNTESTED: " ?"}  # bold (best) is the renderer's
FLAGS = {"busy": " !", "chance": " ‡"}
BUSY_NOTE = ("!: step times measured while the machine was busier than its cores (1-min load average above "
             "the CPU count at the start or end of training): slower than on a quiet machine; kept, flagged")


@dataclass
class Cell:
    """One table cell: the mean over the runs pooled in it, their sample std (n > 1) and n.

    ``values`` are the pooled runs' values (the across-seeds evidence for ``mark_best``);
    ``mark`` is the cell's significance mark (``reports.significance``: best / tie / untested)
    and ``best`` says it is bold; ``flag`` marks a figure to read with care (``FLAGS``), never
    hides it; ``interval`` is the cell's 95% CI (accuracy) or p10-p90 (step time), drawn as
    error bars and printed only when ``show_interval`` (difference rows).
    """

    mean: float
    std: float | None
    n: int
    best: bool = False
    values: tuple[float, ...] = ()
    mark: str = ""
    flag: str = ""
    interval: tuple[float, float] | None = None
    show_interval: bool = False


@dataclass
class Row:
    keys: tuple[str, ...]
    cells: dict[str, Cell]
    reference: bool = False


@dataclass
class Table:
    """A rendered-format-neutral table; ``dropped`` says which values were refused and why."""

    name: str
    title: str
    key_names: list[str]
    columns: list[str]
    headers: dict[str, str]
    formats: dict[str, Format]
    rows: list[Row]
    notes: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)

    def header(self, col: str) -> str:
        return self.headers.get(col, col)

    def cell_text(self, row: Row, col: str) -> str:
        cell = row.cells.get(col)
        if cell is None:
            return ""
        fmt = self.formats[col]
        text = fmt(cell.mean) + (f" ± {fmt(cell.std)}" if cell.std is not None else "")
        if cell.show_interval and cell.interval is not None:
            text += f" [{fmt(cell.interval[0])}, {fmt(cell.interval[1])}]"
        return text + MARKS.get(cell.mark, "") + FLAGS.get(cell.flag, "")


def value_format(unit: str) -> tuple[float, Format, str]:
    """(scale, format, unit shown) for any figure of a tidy unit (the custom table's display);
    fractions are shown in percent / points."""
    if unit == "fraction":
        return 100.0, fixed(1), "%"
    if unit == "bytes":
        return 1 / 2**20, fixed(1), "MiB"
    if unit == "count":
        return 1.0, human_count, ""
    if unit == "tokens/s":
        return 1.0, fixed(0), "tokens/s"
    return 1.0, metrics.significant, unit or ""


# -- compatibility ---------------------------------------------------------------------------

def _compat_key(row: pd.Series) -> tuple[tuple[str, str], ...]:
    fields = COST_COMPAT if row.get("phase") == TRAIN else EVAL_COMPAT
    return tuple((f, str(row[f])) for f in fields if f in row.index)


def _who(rows: pd.DataFrame) -> str:
    names = sorted({f"{r.model}/{r.label}/seed {r.seed}" for r in rows.itertuples()})
    return ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")


def drop_mixed(data: pd.DataFrame, col: str, headers: dict[str, str],
               allow_mixed: bool) -> tuple[pd.DataFrame, list[str]]:
    """Keep, per column, only values measured the same way as most runs in that column.

    Two accuracies from different protocols, test data or test-set sizes are different
    quantities; averaging or ranking them is the error this refuses. The majority setting (by
    number of runs) is kept so one stray run does not empty a column. With ``allow_mixed`` the
    values stay and the note says the column is mixed.
    """
    if data.empty:
        return data, []
    keys = data.apply(_compat_key, axis=1)
    found: dict[tuple[str, str], list[str]] = {}  # (who, how they differ) -> columns, for one note each
    drop = pd.Series(False, index=data.index)
    for value, idx in data.groupby(col, sort=False).groups.items():
        counts = {k: data.loc[idx][keys.loc[idx] == k].run_id.nunique() for k in set(keys.loc[idx])}
        if len(counts) < 2:
            continue
        kept = sorted(counts, key=lambda k: (-counts[k], str(k)))[0]
        for key in sorted((k for k in counts if k != kept), key=str):
            diff = ", ".join(f"{f}={v} (kept {kv})" for (f, v), (_, kv) in zip(key, kept) if v != kv)
            sel = idx[(keys.loc[idx] == key).to_numpy()]
            found.setdefault((_who(data.loc[sel]), diff), []).append(headers.get(str(value), str(value)))
            drop.loc[sel] = not allow_mixed
    verb = "MIXED (--allow-mixed), includes" if allow_mixed else "dropped values of"
    notes = [f"{', '.join(cols)}: {verb} {who}: {diff}" + ("" if allow_mixed else "; --allow-mixed includes them")
             for (who, diff), cols in found.items()]
    return data[~drop], notes


# -- the generic pivot -----------------------------------------------------------------------

def _tuple(index_value: object) -> tuple[str, ...]:
    return index_value if isinstance(index_value, tuple) else (index_value,)  # type: ignore[return-value]


def _cell(values: pd.Series) -> Cell:
    vals = tuple(float(x) for x in values)
    return Cell(float(values.mean()), float(values.std()) if len(vals) > 1 else None, len(vals), values=vals)


def pivot(data: pd.DataFrame, rows: list[str], col: str, *, name: str, title: str,
          order: list[str] | None = None, headers: dict[str, str] | None = None,
          formats: dict[str, Format] | None = None, default_format: Format = fixed(1),
          better: dict[str, bool | None] | bool | None = True, avg: str | None = None,
          allow_mixed: bool = False) -> Table:
    """Rows x columns of ``data.value``: mean ± std over the runs (seeds) in each cell.

    ``avg`` adds a column averaging a row's columns per seed first (a seed counts only when it
    has every column), then across seeds, so its ± is the spread of the average itself.
    ``better``: True/False (higher/lower is better for every column), a per-column dict (None:
    that column ranks nothing), or None for no marking.
    """
    headers = dict(headers or {})
    data = data.assign(**{c: data[c].astype(str) for c in [*rows, col]})
    data, dropped = drop_mixed(data, col, headers, allow_mixed)
    present = set(data[col])
    columns = [c for c in (order or list(dict.fromkeys(data[col]))) if c in present]
    keys = list(dict.fromkeys(map(tuple, data[rows].to_numpy().tolist())))
    reference = set(map(tuple, data[data.reference.astype(bool)][rows].to_numpy().tolist())) \
        if "reference" in data else set()
    cells: dict[tuple[str, ...], dict[str, Cell]] = {k: {} for k in keys}
    for idx, v in data.groupby([*rows, col], sort=False).value:
        cells[_tuple(idx)[:-1]][_tuple(idx)[-1]] = _cell(v)
    if avg and columns:
        wide = data.groupby([*rows, "seed", col]).value.mean().unstack(col).reindex(columns=columns).dropna()
        for idx, v in wide.mean(axis=1).groupby(level=list(range(len(rows)))):
            cells[_tuple(idx)][avg] = _cell(v)
        columns.append(avg)
    fmts = {c: (formats or {}).get(c, default_format) for c in columns}
    table = Table(name, title, [KEY_HEADERS.get(r, r) for r in rows], columns, headers, fmts,
                  [Row(k, cells[k], k in reference) for k in keys], dropped=dropped)
    if "protocol" in data and (data.phase != TRAIN).any():
        table.notes.append(_setting_note(data[data.phase != TRAIN]))
    table.notes += _pooling_notes(data, rows, col)
    if better is not None:
        mark_best(table, better)
    return table


def _pooling_notes(data: pd.DataFrame, rows: list[str], col: str) -> list[str]:
    """Say what a cell with several values pooled: seeds (expected) or something else (a choice)."""
    cells = data.groupby([*rows, col])
    if not (cells.value.count() > 1).any():
        return []
    varying = [d for d in ("seed", "task", "model", "label", "device")
               if d in data and d not in rows and d != col and (cells[d].nunique() > 1).any()]
    seeds = ", ".join(sorted(set(data.seed.astype(str))))
    pooled = ", ".join(KEY_HEADERS.get(d, d).lower() for d in varying) or "repeated runs"
    note = f"cells with several values show mean ± sample std (ddof=1), pooled across {pooled}"
    if varying == ["seed"]:
        return [f"{note} ({seeds})"]
    return [f"{note}; group by {', '.join(d for d in varying if d != 'seed')} to separate them"
            if any(d != "seed" for d in varying) else note]


def mark_best(table: Table, better: dict[str, bool | None] | bool,
              evidence: Callable[[Row, str], Evidence | None] | None = None) -> None:
    """Bold a column's best only when significantly better than the runner-up; mark ties (``reports.significance``).

    Candidates are method rows (references never compete). A cell's evidence is what
    ``evidence`` returns for it (per-item outcomes, step-time spreads, exact counts), else its
    runs' values across seeds. The footnote names the tests used and the level.
    """
    used: set[str] = set()
    for col in table.columns:
        higher = better.get(col, True) if isinstance(better, dict) else better
        if higher is None:  # a figure with no direction (the catalogue's higher_is_better None)
            continue
        rows = [r for r in table.rows if not r.reference and col in r.cells and not math.isnan(r.cells[col].mean)]
        for r in rows:
            r.cells[col].best, r.cells[col].mark = False, ""
        fmt = table.formats[col]
        ev = {r.keys: (evidence(r, col) if evidence else None) or Seeds(r.cells[col].values) for r in rows}
        marks, tests = mark_column({r.keys: r.cells[col].mean for r in rows}, ev, higher,
                                   {r.keys: fmt(r.cells[col].mean) for r in rows})
        used |= tests
        for r in rows:
            r.cells[col].mark = marks.get(r.keys, "")
            r.cells[col].best = r.cells[col].mark == BEST
    table.notes = [n for n in table.notes if not n.startswith(FOOTNOTE_START)]
    if any(c.mark for r in table.rows for c in r.cells.values()):
        table.notes.append(footnote(used))


# -- paper layouts ---------------------------------------------------------------------------

def _sort_rows(data: pd.DataFrame) -> pd.DataFrame:
    return data.sort_values(["model", "reference", "label"], ascending=[True, False, True], kind="stable")


def _setting_note(data: pd.DataFrame) -> str:
    limits = sorted({int(x) for x in data.eval_limit.dropna()})
    shown = ", ".join("all" if x == 0 else str(x) for x in limits)
    return (f"protocol: {', '.join(sorted(set(data.protocol.dropna().astype(str))))}; "
            f"test items per task: {shown or '?'}")


def accuracy_tables(res: Results, metric: str = "acc", allow_mixed: bool = False, vs: str | None = None) -> list[Table]:
    """The commonsense table in the LLM-Adapters / DoRA / LoSiA layout, plus one for other tasks.

    Accuracy after training, on tasks the run trained on (an untrained task is a retention
    task, reported under forgetting), in percent; a base-model row (before training) and a
    chance row as references. Bold and ties come from McNemar's test on the items the runs
    kept (``_item_evidence``); tasks where the base model is not above chance are marked;
    ``vs`` (a method) adds a row per other method: its difference with a 95% CI. An adapter
    scored by ``bench eval --adapter`` is a row of its own, never part of the base model's cells;
    a folder of ``bench eval`` runs alone gives the table of what they scored.
    """
    df = res.df[res.df.metric == metric]
    after = df[(df.phase == AFTER) & trained_on(df)]
    evaluated = df[(df.phase == EVAL) & df.adapter.notna()]  # bench eval --adapter: a row of its own
    # the base model's cells: before training, or a bench eval of the model itself (no adapter)
    base = df[(df.phase == BEFORE) | ((df.phase == EVAL) & df.adapter.isna())]
    shown = pd.concat([after, evaluated]) if not (after.empty and evaluated.empty) else base
    if shown.empty:
        return []
    base = base[base.model.isin(set(shown.model))]
    base = base.drop_duplicates(["model", "task", *settings.MEASURED_BY, "value"])
    base = base.assign(label=BASE_LABEL, reference=True)
    trained = not after.empty
    after = pd.concat([after, evaluated])
    scale = metrics.get(metric).scale  # fractions shown in percent
    data = _sort_rows(pd.concat([base, after])).assign(value=lambda d: d.value * scale)
    commonsense = set(suites()["commonsense"])
    tables = []
    for name, title, tasks in (("commonsense", "Commonsense reasoning", report_order(set(shown.task) & commonsense)),
                               ("accuracy", "Other tasks", report_order(set(shown.task) - commonsense))):
        if not tasks:
            continue
        part = data[data.task.isin(tasks)]
        table = pivot(part, ["model", "label"], "task", name=name, order=tasks, headers=report_headers(),
                      title=f"{title}: {metric} {'after training' if trained else 'evaluated'} (%)", avg="Avg",
                      better=None, allow_mixed=allow_mixed)
        grids = accuracy_evidence(res, tasks, AFTER, metric)
        _item_evidence(table, grids, scale, bool(metrics.get(metric).higher_is_better))
        _chance_marks(table, part, scale)
        if vs:
            table.rows += _vs_rows(table, grids, pick_runs(res.ok_runs(), vs)[0].label, scale)
        chance = part.dropna(subset=["chance"]).groupby("task").chance.first() * scale
        cells = {t: Cell(float(chance[t]), None, 1) for t in table.columns if t in chance}
        if all(t in cells for t in table.columns[:-1]):
            cells["Avg"] = Cell(float(chance[table.columns[:-1]].mean()), None, 1)
        if cells:
            table.rows.append(Row(("", "chance"), cells, reference=True))
        tables.append(table)
    return tables


def _task_grids(grids: dict[str, Items], col: str, tasks: list[str]) -> list[Items]:
    """The outcome grids behind one accuracy cell: its task's, or every task's for the average."""
    if col in tasks:
        return [grids[col]] if col in grids else []
    return [grids[t] for t in tasks] if all(t in grids for t in tasks) else []


def _item_evidence(table: Table, grids: dict[tuple[str, str], dict[str, Items]], scale: float,
                   higher: bool) -> None:
    """Significance marks from per-item outcomes, and each cell's 95% CI over items for error bars."""
    tasks = [c for c in table.columns if c != "Avg"]

    def evidence(row: Row, col: str) -> Evidence | None:
        parts = _task_grids(grids.get(row.keys, {}), col, tasks)  # type: ignore[arg-type]
        return pooled(dict(zip(tasks, parts))) if len(parts) > 1 else (parts[0] if parts else None)

    mark_best(table, higher, evidence)
    for row in table.rows:
        for col, cell in row.cells.items():
            parts = _task_grids(grids.get(row.keys, {}), col, tasks)  # type: ignore[arg-type]
            if parts:
                _, low, high = interval(parts)
                cell.interval = (scale * low, scale * high)


def _chance_marks(table: Table, data: pd.DataFrame, scale: float) -> None:
    """Flag base-model cells not above chance (exact 95% CI, ``reports.chance``), and say so in a note."""
    base = data[data.label == BASE_LABEL].dropna(subset=["chance", "n"])
    for r in base.itertuples():
        found = check(str(r.task), r.value / scale, int(r.n), float(r.chance))
        cell = next((row.cells.get(found.task) for row in table.rows if row.keys == (r.model, BASE_LABEL)), None)
        if found.verdict and cell is not None:
            cell.flag, cell.interval = "chance", (scale * found.low, scale * found.high)
            table.notes.append(f"‡ {r.model}: {found.note()}; gains on this task start from guessing")


def _vs_rows(table: Table, grids: dict[tuple[str, str], dict[str, Items]], vs: str, scale: float) -> list[Row]:
    """Per other method, its paired difference from ``vs`` per task and on the average, with 95% CIs."""
    tasks = [c for c in table.columns if c != "Avg"]
    rows = []
    for row in (r for r in table.rows if not r.reference and r.keys[1] != vs):
        mine, theirs = grids.get(row.keys, {}), grids.get((row.keys[0], vs), {})  # type: ignore[arg-type]
        paired = {t: shared(theirs[t], mine[t]) for t in tasks if t in mine and t in theirs}
        paired = {t: Paired(t, *p) for t, p in paired.items() if p is not None}
        found = {t: difference(p) for t, p in paired.items()}
        if len(paired) == len(tasks) > 1:
            found["Avg"] = suite_difference(list(paired.values()))
        cells = {c: Cell(scale * d.diff, None, d.items, interval=(scale * d.low, scale * d.high), show_interval=True)
                 for c, d in found.items()}
        if cells:
            rows.append(Row((row.keys[0], f"{row.keys[1]} − {vs}"), cells, reference=True))
    if rows:
        table.notes.append(f"rows '− {vs}': paired difference in points on the same items, each averaged over "
                           f"the shared seeds, [95% bootstrap CI] (Avg: items resampled within each task)")
    return rows


EFFICIENCY = metrics.columns(metrics.EFFICIENCY)  # the columns, in order (the catalogue's ``table`` role)


def peak_memory(costs: pd.DataFrame) -> pd.DataFrame:
    """Per run, its ``peak_mem_bytes`` rows: the first of ``metrics.PEAK_MEMORY`` it measured."""
    parts, seen = [], set()
    for name in metrics.PEAK_MEMORY:
        part = costs[(costs.metric == name) & ~costs.run_id.isin(seen)]
        parts.append(part)
        seen |= set(part.run_id)
    return pd.concat(parts).assign(metric=metrics.PEAK, unit=metrics.unit(metrics.PEAK))


def efficiency_tables(res: Results, allow_mixed: bool = False) -> list[Table]:
    """Cost figures per (model, method), one table per device: costs only compare on one device."""
    costs = res.df[res.df.phase == TRAIN]
    costs = pd.concat([costs, peak_memory(costs)])
    figures = {m: metrics.get(m) for m in EFFICIENCY}
    costs = costs[costs.metric.isin(set(figures))]
    if costs.empty:  # evaluation-only runs: no training, no costs
        return []
    costs = costs.assign(value=costs.value.astype(float) * costs.metric.map({m: f.scale for m, f in figures.items()}))
    devices = sorted(set(costs.device))
    tables = []
    for device in devices:
        part = _sort_rows(costs[costs.device == device])
        gpu = device.startswith("cuda")
        headers = {m: f.header for m, f in figures.items()}
        headers[metrics.PEAK] = metrics.peak_memory_figure(gpu).header
        name = "efficiency" if len(devices) == 1 else f"efficiency-{_slug(device)}"
        table = pivot(part, ["model", "label"], "metric", name=name, title=f"Efficiency on {device}",
                      order=EFFICIENCY, headers=headers, formats={m: f.format for m, f in figures.items()},
                      better=None, allow_mixed=allow_mixed)
        table.notes.insert(0, "step time: median over timed steps; peak memory: "
                           + ("CUDA allocator peak during training" if gpu else "process RSS peak during training")
                           + "; activations: bytes saved for backward in one profiled step")
        _cost_evidence(table, [r for r in res.ok_runs() if r.device == device],
                       {m: f.higher_is_better for m, f in figures.items()})
        tables.append(table)
    return tables


EXACT_COSTS = metrics.names("exact")  # deterministic counts, no spread
LOAD_SENSITIVE = metrics.names("load_sensitive")


def _cost_evidence(table: Table, runs: list[Run], better: dict[str, bool | None]) -> None:
    """Marks from step-time spreads (p10-p90 of every timed step) and exact counts; busy-machine flags."""
    by_row: dict[tuple[str, ...], list[Run]] = {}
    for run in runs:
        by_row.setdefault((str(run.config.get("model")), run.label), []).append(run)
    spreads = {k: Spread.of(t) for k, rs in by_row.items() if (t := [x for r in rs for x in run_step_times(r)])}

    def evidence(row: Row, col: str) -> Evidence | None:
        cell = row.cells[col]
        if col == "step_time_s" and row.keys in spreads:
            return StepSpread(spreads[row.keys])
        return Exact(cell.mean) if col in EXACT_COSTS and len(set(cell.values)) == 1 else None

    mark_best(table, better, evidence)
    busy = []
    for row in table.rows:
        if "step_time_s" in row.cells and row.keys in spreads:
            row.cells["step_time_s"].interval = (spreads[row.keys].p10, spreads[row.keys].p90)
        loaded = [r for r in by_row.get(row.keys, []) if busier_than_cores(r.record.get("load"))]
        for col in LOAD_SENSITIVE if loaded else ():
            if col in row.cells:
                row.cells[col].flag = "busy"
        busy += [f"{' / '.join(row.keys)} seed {r.config.get('seed')}: {load_note(r.record['load'])}" for r in loaded]
    if busy:
        table.notes += [BUSY_NOTE, *busy]


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40]


SEQUENTIAL = metrics.columns(metrics.SEQUENTIAL)


# -- forgetting ------------------------------------------------------------------------------

def retention_data(df: pd.DataFrame) -> pd.DataFrame:
    """Forgetting (before − after accuracy) on tasks a run did not train on, one row per run/task.

    Recorded ``forgetting`` metrics win; otherwise ``harness.forgetting`` computes it from
    ``acc`` before and after.
    """
    recorded = df[(df.metric == "forgetting") & df.phase.map(stage_number).isna()]
    acc = df[df.metric == "acc"]
    after = acc[(acc.phase == AFTER) & ~trained_on(acc)]
    before = acc[acc.phase == BEFORE][["run_id", "task", "value"]]
    merged = after.merge(before, on=["run_id", "task"], suffixes=("", "_before"))
    lost: dict[tuple[str, str], float] = {}
    for run_id, g in merged.groupby("run_id", sort=False):
        per_task = forgetting.retention_forgetting(dict(zip(g.task, g.value_before)), dict(zip(g.task, g.value)))
        lost.update({(run_id, task): v for task, v in per_task.items()})
    computed = merged.assign(value=[lost[k] for k in zip(merged.run_id, merged.task)], metric="forgetting")
    computed = computed[~computed.set_index(["run_id", "task"]).index.isin(
        recorded.set_index(["run_id", "task"]).index)][df.columns]
    return pd.concat([recorded, computed]).assign(phase="retention")


def forgetting_tables(res: Results, allow_mixed: bool = False) -> list[Table]:
    """Retention table (forgetting per task and mean) and, for sequential runs, final accuracy and BWT."""
    tables = []
    retention = retention_data(res.df)
    if not retention.empty:
        data = _sort_rows(retention.assign(value=retention.value * metrics.get("forgetting").scale))
        table = pivot(data, ["model", "label"], "task", name="forgetting", headers=report_headers(),
                      order=report_order(set(data.task)), avg="Mean",
                      better=metrics.get("forgetting").higher_is_better,
                      title="Forgetting on retention tasks (accuracy before − after, points; positive = lost)",
                      allow_mixed=allow_mixed)
        tables.append(table)
    matrices = sequential_matrices(res.df)
    if not matrices.empty:
        tables.append(pivot(matrices, ["model", "label", "phase"], "task", name="sequential_matrix",
                            title="Sequential accuracy matrix (acc after each stage, points; rows = stages in "
                                  "training order)", headers={**report_headers(), "phase": "After"}, better=None,
                            allow_mixed=allow_mixed))
    seq = sequential_data(res.df)
    if not seq.empty:
        figures = [metrics.get(m) for m in SEQUENTIAL]
        tables.append(pivot(_sort_rows(seq), ["model", "label"], "metric", name="sequential",
                            title="Sequential training (points)", order=SEQUENTIAL,
                            headers={f.name: f.header for f in figures}, formats={f.name: f.format for f in figures},
                            better={f.name: f.higher_is_better for f in figures}, allow_mixed=allow_mixed))
    return tables


def sequential_matrix(df: pd.DataFrame, run_id: str) -> pd.DataFrame:
    """R[i][j] of one run: accuracy on task j (columns, training order) after stage i (rows)."""
    acc = df[(df.run_id == run_id) & (df.metric == "acc")]
    acc = acc[acc.phase.map(stage_number).notna()]
    if acc.empty:
        return pd.DataFrame()
    order = [t for t in str(acc.train_tasks.iloc[0]).split("+") if t in set(acc.task)]
    matrix = acc.pivot_table(index="phase", columns="task", values="value", aggfunc="mean")
    matrix = matrix.loc[sorted(matrix.index, key=stage_number)]
    return matrix[order + sorted(set(matrix.columns) - set(order))]


def sequential_matrices(df: pd.DataFrame) -> pd.DataFrame:
    """Tidy rows of every sequential run's accuracy matrix, stages in order, tasks in training order."""
    staged = df[(df.metric == "acc") & df.phase.map(stage_number).notna()]
    if staged.empty:
        return staged
    parts = []
    for _, g in _sort_rows(staged).groupby("run_id", sort=False):
        order = {t: i for i, t in enumerate(str(g.train_tasks.iloc[0]).split("+"))}
        g = g.assign(_stage=g.phase.map(stage_number), _task=g.task.map(lambda t: order.get(t, len(order))))
        parts.append(g.sort_values(["_stage", "_task"], kind="stable").drop(columns=["_stage", "_task"]))
    out = pd.concat(parts)
    return out.assign(value=out.value * metrics.get("acc").scale)


def sequential_data(df: pd.DataFrame) -> pd.DataFrame:
    """Per sequential run: final average accuracy, BWT (recorded, else computed) and mean forgetting,
    all by ``harness.forgetting`` on the run's accuracy matrix, in points.

    BWT and forgetting need stage j to be the one trained on task j, assumed when the run has
    one stage per training task (stages in numeric order = training order). The final average
    is over every task of the matrix's last row, retention tasks included.
    """
    rows = []
    staged = df[df.phase.map(stage_number).notna()]
    for run_id, g in staged.groupby("run_id", sort=False):
        matrix = sequential_matrix(df, run_id)
        if matrix.empty:
            continue
        base = {**g.iloc[0].to_dict(), "task": g.iloc[0].train_tasks,
                "data_sha256": "+".join(sorted(set(g.data_sha256.dropna().astype(str))))}
        values = {"final_avg_acc": forgetting.final_average([matrix.iloc[-1].dropna().tolist()])}
        trained = str(base["train_tasks"]).split("+")
        if len(matrix) == len(trained) == len(matrix.columns) and list(matrix.columns) == trained and len(trained) > 1:
            R = matrix.to_numpy().tolist()
            values["bwt"] = forgetting.backward_transfer(R)
            values["forgetting_mean"] = forgetting.mean_forgetting(forgetting.sequential_forgetting(R))
        recorded = df[(df.run_id == run_id) & (df.metric.str.lower() == "bwt")]
        if not recorded.empty:
            values["bwt"] = float(recorded.value.iloc[-1])
        rows += [{**base, "metric": m, "phase": "sequential", "value": v * metrics.get(m).scale}
                 for m, v in values.items()]
    return pd.DataFrame(rows, columns=df.columns)


# -- allocated ranks -------------------------------------------------------------------------

def first_runs(res: Results, has: Callable[[Run], bool]) -> list[Run]:
    """The lowest-seed finished run of each (model, method label) for which ``has`` holds.

    Per-run figures (allocations, logs) are shown for one seed, not averaged: averaging
    ranks across seeds would describe an allocation no run used.
    """
    chosen: dict[tuple[str, str], Run] = {}
    for run in sorted(res.ok_runs(), key=lambda r: (r.config.get("seed", 0), r.run_id)):
        key = (run.config.get("model", "?"), run.label)
        if key not in chosen and has(run):
            chosen[key] = run
    return [chosen[k] for k in sorted(chosen)]


def rank_data(run: Run) -> pd.DataFrame:
    """One row per adapted matrix: layer, matrix type, allocated rank."""
    rows = [{"layer": split_module(name)[0], "matrix": split_module(name)[1], "value": float(rank),
             "run_id": run.run_id, "seed": run.config.get("seed", 0), "model": run.config.get("model"),
             "label": run.label} for name, rank in allocated_ranks(run.record).items()]
    layer_order = lambda s: s.map(lambda x: int(x) if x.isdigit() else 10**9)  # noqa: E731
    return pd.DataFrame(rows).sort_values("layer", key=layer_order, kind="stable")


def ranks_tables(res: Results) -> list[Table]:
    """Allocated rank per (layer, matrix) for rank-allocating methods (Sensitivity-LoRA, AdaLoRA)."""
    tables = []
    for run in first_runs(res, lambda r: bool(allocated_ranks(r.record))):
        data = rank_data(run)
        matrices = [m for m in DECODER_LINEARS if m in set(data.matrix)] + sorted(set(data.matrix) - set(DECODER_LINEARS))
        table = pivot(data, ["layer"], "matrix", name=f"ranks-{_slug(run.config.get('model', ''))}-{_slug(run.label)}",
                      title=f"Allocated ranks: {run.config.get('model')} / {run.label} (seed {run.config.get('seed')})",
                      order=matrices, default_format=fixed(0), better=None)
        table.notes = [f"{len(data)} matrices, total rank {int(data.value.sum())}, "
                       f"min {int(data.value.min())}, max {int(data.value.max())}; run {run.run_id}"]
        tables.append(table)
    return tables


# -- any metric by any grouping --------------------------------------------------------------

def custom_table(res: Results, rows: list[str], col: str, metric: str, phase: str | None,
                 allow_mixed: bool = False) -> Table:
    """``--rows A,B --cols C --metric M --phase P``; ``method`` means the variant label."""
    df = res.df
    data = df[df.metric == metric]
    data = pd.concat([data, peak_memory(df)]) if metric == "peak_mem_bytes" else data
    if phase:
        data = data[data.phase == phase]
    if data.empty:
        raise ReportError(f"no values for metric {metric!r} in phase {phase!r}; metrics: "
                          f"{', '.join(sorted(set(df.metric)))}; phases: {', '.join(sorted(set(df.phase)))}")
    title = f"{' × '.join(rows)} by {col}"
    rename = lambda k: "label" if k == "method" else k  # noqa: E731
    rows, col = [rename(r) for r in rows], rename(col)
    unknown = [k for k in [*rows, col] if k not in df.columns]
    if unknown:
        valid = [c for c in df.columns if c not in ("label", "value", "stderr", "n", "reference", "source")]
        raise ReportError(f"unknown grouping {', '.join(unknown)}; use any of method, {', '.join(valid)}")
    scale, fmt, unit = value_format(str(data.unit.iloc[0]))
    data = data.assign(value=data.value.astype(float) * scale)
    headers = report_headers() if col == "task" else {}
    return pivot(data.sort_values([*rows, col], kind="stable"), rows, col, name="custom", headers=headers,
                 title=f"{metric}{f' ({unit})' if unit else ''}, phase {phase or 'any'}: {title}",
                 order=report_order(set(data[col].astype(str))) if col == "task" else None,
                 default_format=fmt, better=metrics.task_metric(metric).higher_is_better,
                 avg="Avg" if col == "task" and unit == "%" else None, allow_mixed=allow_mixed)
