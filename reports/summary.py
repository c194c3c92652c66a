"""The plain-text summary ``bench run`` and ``bench sweep`` print after their runs, in 120 columns.

Two tables, one row per run: accuracy per evaluated task (the base model's row first, then each
run's accuracy after training, each with the half-width of its 95% interval over the test items)
and the run's costs. A suite trained as a whole is named by the suite (``commonsense``), not by
its eight tasks; tables wider than ``WIDTH`` are split into column groups that each fit, the run
columns repeated, rather than wrapped by the terminal.
"""
from __future__ import annotations

import textwrap
from typing import Any, Sequence

from harness import metrics

WIDTH = 120
Z95 = 1.96  # the normal quantile of a two-sided 95% interval (acc +- Z95 * stderr, as lm-eval reports it)
BASE = "base model"


def trained_label(train_tasks: str, suites: dict[str, list[str]]) -> str:
    """A run's training tasks ("+"-joined) as printed: the suite's name when they are exactly a suite."""
    tasks = set(train_tasks.split("+"))
    return next((name for name, members in suites.items() if set(members) == tasks), train_tasks)


def fit(header: list[str], rows: list[list[str]], keys: int, width: int = WIDTH) -> str:
    """Render a table, its columns after the first ``keys`` split into groups whose lines fit ``width``."""
    widths = [max(len(x) for x in col) for col in zip(header, *rows)]
    used, groups = sum(widths[:keys]) + 2 * keys, [[]]
    for i in range(keys, len(header)):
        if groups[-1] and used + sum(widths[j] + 2 for j in groups[-1]) + widths[i] > width:
            groups.append([])
        groups[-1].append(i)
    blocks = []
    for group in groups:
        cols = [*range(keys), *group]
        line = lambda cells: "  ".join(cells[c].ljust(widths[c]) for c in cols).rstrip()  # noqa: E731
        blocks.append("\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)]))
    return "\n\n".join(blocks)


def _acc_cell(rows: Any, mark: str = "") -> str:
    if rows.empty:
        return "-"
    value, stderr = float(rows.value.iloc[0]), rows.stderr.iloc[0]
    half = f"±{100 * Z95 * float(stderr):.1f}" if stderr == stderr else ""  # NaN stderr: one item
    return f"{100 * value:.1f}{half}{mark}"


def accuracy_table(df: Any, suites: dict[str, list[str]], near_chance: set[tuple[str, str]]) -> str:
    """Accuracy % per task: the base model (before training) once per model and test-set size, then each run."""
    acc = df[df.metric == "acc"]
    tasks = list(dict.fromkeys(acc.task))
    header = ["method", "trained on", "seed", *tasks]
    rows, bases = [], set()
    for (run_id, model, method, trained, seed), g in acc.groupby(["run_id", "model", "method", "train_tasks", "seed"],
                                                                 sort=False):
        base_key = (model, tuple(g[g.phase == metrics.BEFORE].n.fillna(0)))
        if base_key not in bases and (g.phase == metrics.BEFORE).any():
            bases.add(base_key)
            rows.append([BASE, "-", "-", *(_acc_cell(g[(g.task == t) & (g.phase == metrics.BEFORE)],
                                                     "‡" if (model, t) in near_chance else "") for t in tasks)])
        final = metrics.final_phase(g.phase)
        rows.append([method, trained_label(trained, suites), str(seed),
                     *(_acc_cell(g[(g.task == t) & (g.phase == final)]) if final != metrics.BEFORE else "-"
                       for t in tasks)])
    return fit(header, rows, keys=3)


def cost_table(df: Any, suites: dict[str, list[str]], busy: set[str]) -> str:
    """Per run: forgetting, BWT, median step time, peak memory, trainable parameters, status."""
    header = ["method", "trained on", "seed", "forgetting", "bwt", "step_s", "peak_mem", "trainable", "status"]
    rows = []
    for (run_id, method, trained, seed), g in df.groupby(["run_id", "method", "train_tasks", "seed"], sort=False):
        final = metrics.final_phase(g.phase)
        value = lambda metric, task: g[(g.metric == metric) & (g.task == task) & (g.phase == final)].value  # noqa: E731
        forget, bwt = value("forgetting", "retention-mean"), value("bwt", "sequence")
        c = g[g.phase == metrics.TRAIN].set_index("metric").value
        mem = next((c[k] for k in metrics.PEAK_MEMORY if k in c), None)  # the catalogue's peak-memory rule
        rows.append([method, trained_label(trained, suites), str(seed),
                     f"{forget.iloc[0]:+.3f}" if len(forget) else "-",
                     f"{bwt.iloc[0]:+.3f}" if len(bwt) else "-",
                     f"{c['step_time_s']:.3f}{'!' if run_id in busy else ''}" if "step_time_s" in c else "-",
                     f"{mem / 2**30:.2f}GiB" if mem is not None else "-",
                     f"{int(c['trainable_params']):,} ({c['trainable_pct']:.2f}%)" if "trainable_pct" in c else "-",
                     str(g.status.iloc[0])])
    return fit(header, rows, keys=3)


def summary_table(df: Any, busy: set[str] = frozenset(), near_chance: set[tuple[str, str]] = frozenset(),
                  suites: dict[str, list[str]] | None = None) -> str:
    """Both tables with their notes. ``busy`` run ids get ``!`` on their step time (measured on a
    machine busier than its cores), ``near_chance`` (model, task) pairs ``‡`` on the base model's
    accuracy (not above chance); ``suites``: suite name -> tasks (default: the task registry's)."""
    if df.empty:
        return "(no results)"
    if suites is None:
        from tasks import registry as task_registry

        suites = task_registry.suites()
    marks: Sequence[str] = [m for m, on in (("‡ base model not above chance", near_chance),
                                            ("! step time measured on a machine busier than its cores", busy)) if on]
    note = (f"accuracy % ({BASE}: before training; runs: after training, after the last stage for sequences; "
            f"±: half-width of the 95% interval over the test items){''.join('; ' + m for m in marks)}")
    return (textwrap.fill(note, WIDTH) + f"\n{accuracy_table(df, suites, near_chance)}\n\n"
            f"costs (forgetting = mean retention loss; step_s: median seconds per optimizer step)\n"
            f"{cost_table(df, suites, busy)}")
