"""``bench report`` and ``bench table``: argument parsing and printing only.

Imports nothing heavy at module level: ``harness.cli`` registers these parsers on every
``bench`` call, and ``bench run`` must not pay for pandas or matplotlib.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from harness.schema.settings import comma_list


def _add_selection(p: argparse.ArgumentParser) -> None:
    p.add_argument("results", nargs="*", type=Path, default=[Path("results")],
                   help="results folders, runs/ folders or single run folders (default: results/); "
                        "several are merged, e.g. from different machines")
    p.add_argument("--metric", default="acc",
                   help="acc or acc_norm for the accuracy tables; any other tidy metric (step_time_s, "
                        "peak_mem_bytes, final_loss ...) makes a custom table")
    p.add_argument("--rows", type=comma_list, default=None, metavar="KEY[,KEY]",
                   help="custom table rows: any tidy column, method = method and its variant (default: model,method)")
    p.add_argument("--cols", default=None, metavar="KEY", help="custom table columns (default: task)")
    p.add_argument("--phase", default=None, help="custom table phase: before, after, train, stage-k ... "
                                                 "(default: after for accuracies, any otherwise)")
    p.add_argument("--vs", default=None, metavar="BASELINE",
                   help="add to the accuracy tables a row per other method: its paired difference from BASELINE "
                        "(a method or variant label) per task and on the average, with a 95%% CI")
    p.add_argument("--allow-mixed", action="store_true",
                   help="keep values measured differently (protocol, metric, test data, eval_limit, device) "
                        "in one column instead of dropping the minority")


def add_parsers(sub: Any) -> None:
    """Register ``report`` and ``table`` on the ``bench`` subparsers."""
    report = sub.add_parser("report", help="tables, plots and one HTML page from stored runs",
                            description="Build paper-style tables (Markdown, LaTeX, CSV), plots (PNG, SVG) and a "
                                        "self-contained index.html from stored run folders, without re-running.")
    _add_selection(report)
    report.add_argument("--out", type=Path, default=Path("report"), help="report folder (default: report/)")
    report.add_argument("--no-plots", action="store_true", help="tables and HTML only")
    report.set_defaults(func=cmd_report)

    table = sub.add_parser("table", help="print the main accuracy table from stored runs")
    _add_selection(table)
    table.add_argument("--format", choices=["text", "markdown", "latex", "csv"], default="text")
    table.set_defaults(func=cmd_table)


def _options(args: argparse.Namespace, plots: bool) -> Any:
    from reports.report import Options

    return Options(metric=args.metric, rows=args.rows, cols=args.cols, phase=args.phase,
                   allow_mixed=args.allow_mixed, plots=plots, vs=args.vs)


def cmd_report(args: argparse.Namespace) -> int:
    from reports.load import ReportError
    from reports.report import build_report

    try:
        report = build_report(args.results, args.out, _options(args, not args.no_plots))
    except ReportError as err:
        print(f"bench report: error: {err}", file=sys.stderr)
        return 2
    for note in report.results.notes + report.refused:
        print(f"note: {note}")
    print(f"{len(report.tables)} tables in {args.out / 'tables'}, {len(report.figures)} figures in "
          f"{args.out / 'plots'}\nreport: {report.index.resolve() if report.index else '-'}")
    return 0


def cmd_table(args: argparse.Namespace) -> int:
    from reports import render
    from reports.load import ReportError, load_results
    from reports.report import build_tables

    opts = _options(args, False)
    try:
        tables = build_tables(load_results(args.results), opts)
    except ReportError as err:
        print(f"bench table: error: {err}", file=sys.stderr)
        return 2
    wanted = ["custom"] if opts.custom else ["commonsense", "accuracy"]
    shown = [t for t in tables if t.name in wanted]
    if not shown:
        print("bench table: no accuracy after training in these runs", file=sys.stderr)
        return 1
    fn = {"text": render.to_text, "markdown": render.to_markdown, "latex": render.to_latex, "csv": render.to_csv}
    print("\n".join(fn[args.format](t) for t in shown), end="")
    return 0
