"""``bench report``: stored run folders -> tables (md, tex, csv), figures (png, svg), index.html.

Nothing is re-run and nothing is written beside the runs: the report folder is the only output,
so reporting on a results folder copied read-only from another machine works.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from harness.metrics import AFTER
from harness.safe_io import write_text
from reports import plots, render
from reports.commands import Command, commands
from reports.html import page
from reports.load import Results, load_results
from reports.tables import (Table, accuracy_tables, custom_table, efficiency_tables, forgetting_tables,
                            ranks_tables)

ACCURACY_METRICS = ("acc", "acc_norm")


@dataclass
class Options:
    """What to tabulate; ``rows``/``cols``/``phase`` or a non-accuracy ``metric`` add a custom table."""

    metric: str = "acc"
    rows: list[str] | None = None
    cols: str | None = None
    phase: str | None = None
    allow_mixed: bool = False
    plots: bool = True
    vs: str | None = None  # --vs BASELINE: difference rows in the accuracy tables

    @property
    def custom(self) -> bool:
        return bool(self.rows or self.cols or self.phase) or self.metric not in ACCURACY_METRICS


@dataclass
class Report:
    results: Results
    tables: list[Table]
    figures: list[plots.Figure] = field(default_factory=list)
    commands: list[Command] = field(default_factory=list)
    index: Path | None = None

    @property
    def refused(self) -> list[str]:
        return [f"{t.name}: {d}" for t in self.tables for d in t.dropped]


def _write(path: Path, text: str) -> None:
    """Atomic like every record, but world-readable: a report is meant to be shared or served."""
    write_text(path, text)
    path.chmod(0o644)


def build_tables(res: Results, opts: Options) -> list[Table]:
    metric = opts.metric if opts.metric in ACCURACY_METRICS else "acc"
    tables = accuracy_tables(res, metric, opts.allow_mixed, opts.vs)
    tables += efficiency_tables(res, opts.allow_mixed)
    tables += forgetting_tables(res, opts.allow_mixed)
    tables += ranks_tables(res)
    if opts.custom:
        phase = opts.phase or (AFTER if opts.metric in ACCURACY_METRICS else None)
        tables.append(custom_table(res, opts.rows or ["model", "method"], opts.cols or "task", opts.metric, phase,
                                   opts.allow_mixed))
    return tables


def build_figures(res: Results, tables: list[Table], out: Path) -> list[plots.Figure]:
    by_name = {t.name: t for t in tables}
    acc = [by_name[n] for n in ("commonsense", "accuracy") if n in by_name]
    efficiency = [t for t in tables if t.name.startswith("efficiency")]
    figures = [f for t in acc for f in plots.accuracy_bars(t, out)]
    figures += [f for t in acc for f in plots.pareto(t, efficiency, out)]
    figures += plots.memory_breakdown(res, out) + plots.loss_curves(res, out)
    if "forgetting" in by_name:
        figures += plots.forgetting_heatmap(by_name["forgetting"], out)
    figures += plots.sequential_heatmaps(res, out) + plots.rank_allocation(res, out)
    figures += plots.reselection_timeline(res, out)
    return figures


def build_report(dirs: list[Path], out: Path, opts: Options) -> Report:
    """Write every table, figure and ``index.html`` under ``out``; return what was built."""
    res = load_results(dirs)
    tables = build_tables(res, opts)
    out = Path(out)
    for table in tables:
        for ext, fn in (("md", render.to_markdown), ("tex", render.to_latex), ("csv", render.to_csv)):
            _write(out / "tables" / f"{table.name}.{ext}", fn(table))
    _write(out / "report.md", "\n".join(render.to_markdown(t) for t in tables))
    _write(out / "tidy.csv", res.df.to_csv(index=False))
    figures = build_figures(res, tables, out / "plots") if opts.plots else []
    cmds = commands(list(res.runs.values()))
    report = Report(res, tables, figures, cmds, out / "index.html")
    _write(report.index, page(res, [str(d) for d in dirs], tables, figures, cmds))
    return report
