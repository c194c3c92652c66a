"""A ``Table`` as Markdown, LaTeX (booktabs), CSV and terminal text.

One renderer per format and no logic beyond formatting: what is in a cell, and which cell is
best, was decided in ``reports.tables``.
"""
from __future__ import annotations

import csv
import io

from reports.tables import Row, Table

EMPTY = "–"


def _cells(table: Table, row: Row, bold: tuple[str, str], empty: str = EMPTY) -> list[str]:
    out = []
    for col in table.columns:
        text = table.cell_text(row, col) or empty
        cell = row.cells.get(col)
        out.append(f"{bold[0]}{text}{bold[1]}" if cell is not None and cell.best else text)
    return out


def _footer(table: Table) -> list[str]:
    return [*table.notes, *table.dropped]


def to_markdown(table: Table) -> str:
    head = [*table.key_names, *(table.header(c) for c in table.columns)]
    lines = [f"**{table.title}**", "", "| " + " | ".join(head) + " |",
             "|" + "|".join(["---"] * len(table.key_names) + ["---:"] * len(table.columns)) + "|"]
    for row in table.rows:
        keys = [k.replace("|", "\\|") for k in row.keys]
        lines.append("| " + " | ".join([*keys, *_cells(table, row, ("**", "**"))]) + " |")
    notes = _footer(table)
    return "\n".join(lines + ([""] + [f"- {n}" for n in notes] if notes else [])) + "\n"


LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "–": "--",
                 "−": "$-$", "±": r"$\pm$", "×": r"$\times$", "…": r"\ldots{}", "≈": r"$\approx$",
                 "‡": r"\ddag{}"}


def latex_escape(text: str) -> str:
    return "".join(LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def to_latex(table: Table) -> str:
    """booktabs tabular in a table float; a repeated first key (the model) is printed once."""
    spec = "l" * len(table.key_names) + "r" * len(table.columns)
    head = [*table.key_names, *(table.header(c) for c in table.columns)]
    lines = [r"\begin{table}[t]", r"\centering", r"\small", f"\\caption{{{latex_escape(table.title)}}}",
             f"\\label{{tab:{table.name}}}", f"\\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(latex_escape(h) for h in head) + r" \\", r"\midrule"]
    previous: str | None = None
    for row in table.rows:
        keys = [latex_escape(k) for k in row.keys]
        if previous is not None and row.keys[0] != previous:
            lines.append(r"\midrule")
        if row.keys[0] == previous and keys:
            keys[0] = ""
        previous = row.keys[0]
        cells = [latex_escape(c) for c in _cells(table, row, ("\x00", "\x01"), empty="--")]
        cells = [c.replace("\x00", r"\textbf{").replace("\x01", "}") for c in cells]
        lines.append(" & ".join([*keys, *cells]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    notes = _footer(table)
    if notes:
        lines.append(r"\par\smallskip{\footnotesize " + "; ".join(latex_escape(n) for n in notes) + "}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def to_csv(table: Table) -> str:
    """Numbers, not text: per column its mean, sample std and number of runs."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    head = [*table.key_names, "reference"]
    for col in table.columns:
        h = table.header(col)
        head += [h, f"{h} std", f"{h} n"]
    writer.writerow(head)
    for row in table.rows:
        line: list[object] = [*row.keys, int(row.reference)]
        for col in table.columns:
            cell = row.cells.get(col)
            line += [cell.mean, cell.std if cell.std is not None else "", cell.n] if cell else ["", "", ""]
        writer.writerow(line)
    return buf.getvalue()


def to_text(table: Table) -> str:
    """Aligned plain text for the terminal; ``*`` marks the best value per column."""
    head = [*table.key_names, *(table.header(c) for c in table.columns)]
    body = [[*row.keys, *_cells(table, row, ("", "*"))] for row in table.rows]
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    nkeys = len(table.key_names)
    fmt = lambda r: "  ".join(x.ljust(w) if i < nkeys else x.rjust(w)  # noqa: E731
                              for i, (x, w) in enumerate(zip(r, widths)))
    lines = [table.title, fmt(head), fmt(["-" * w for w in widths]), *map(fmt, body)]
    notes = ["* bold in the other formats: the column's best (method rows only)", *_footer(table)]
    return "\n".join(lines + [""] + [f"note: {n}" for n in notes]) + "\n"
