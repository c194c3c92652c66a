"""One self-contained HTML page: tables, figures (base64 PNG), environments, commands.

Self-contained because a report gets mailed, attached to a review or opened from a copied
folder: no external stylesheet, script or image, so it renders the same anywhere, offline.
"""
from __future__ import annotations

import base64
import json
import shlex
import html
from datetime import datetime, timezone

from reports.commands import Command
from reports.load import Results, Run
from reports.plots import Figure
from reports.tables import Table

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1300px;color:#222;
padding:0 16px}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:4px;margin-top:2em}h3{font-size:1.05em}
table{border-collapse:collapse;margin:8px 0;font-size:13px}th,td{padding:3px 9px;border-bottom:1px solid #e3e3e3}
th{border-bottom:2px solid #444;text-align:left}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.ref td{color:#777;font-style:italic}b{color:#000}
.notes{font-size:12px;color:#555;margin:4px 0 16px}.dropped{background:#fff4d6;border-left:4px solid #e0a800;
padding:6px 12px;font-size:13px}
.figs{display:grid;grid-template-columns:repeat(auto-fill,minmax(520px,1fr));gap:16px}figure{margin:0}
figure img{width:100%;border:1px solid #eee}
figcaption{font-size:12px;color:#555}pre{background:#f5f5f5;padding:8px;overflow-x:auto;font-size:12px;
white-space:pre-wrap;overflow-wrap:anywhere}.small{font-size:12px;color:#555}.wide{overflow-x:auto}
.failed{color:#b00020}
"""

ENV_PACKAGES = ("torch", "transformers", "peft")


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def table_html(table: Table) -> str:
    """The table with best values in bold, reference rows greyed, then its notes and refusals."""
    head = "".join(f"<th>{_e(k)}</th>" for k in table.key_names)
    head += "".join(f"<th>{_e(table.header(c))}</th>" for c in table.columns)
    body = []
    for row in table.rows:
        cells = "".join(f"<td>{_e(k)}</td>" for k in row.keys)
        for col in table.columns:
            text = _e(table.cell_text(row, col) or "–")
            cell = row.cells.get(col)
            cells += f'<td class="num">{f"<b>{text}</b>" if cell is not None and cell.best else text}</td>'
        body.append(f'<tr{" class=ref" if row.reference else ""}>{cells}</tr>')
    parts = [f'<h3 id="{_e(table.name)}">{_e(table.title)}</h3>',
             f'<div class="wide"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>']
    if table.dropped:
        parts.append('<div class="dropped"><b>Not mixed into this table:</b><ul>'
                     + "".join(f"<li>{_e(d)}</li>" for d in table.dropped) + "</ul></div>")
    if table.notes:
        parts.append('<ul class="notes">' + "".join(f"<li>{_e(n)}</li>" for n in table.notes) + "</ul>")
    return "\n".join(parts)


def figure_html(fig: Figure) -> str:
    data = base64.b64encode(fig.png.read_bytes()).decode("ascii")
    return (f'<figure id="{_e(fig.name)}"><img alt="{_e(fig.title)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{_e(fig.title)} ({_e(fig.svg.name)} beside this page)</figcaption></figure>")


def _env_row(run: Run) -> str:
    rec = run.record
    env = rec.get("environment", {})
    packages = env.get("packages", {})
    commit = str(env.get("git_commit") or "?")[:12] + (" (dirty)" if env.get("git_dirty") else "")
    status = _e(run.status)
    if run.status != "ok":
        err = rec.get("error", {})
        message = str(err.get("message", ""))[:200]
        status = f'<span class="failed">{status}: {_e(err.get("type", ""))} {_e(message)}</span>'
    cells = [run.run_id, run.config.get("model", "?"), run.label, run.config.get("seed", "?"), run.device,
             *(packages.get(p) or "-" for p in ENV_PACKAGES), env.get("python", "-"), commit,
             rec.get("started", "-"), rec.get("ended", "-")]
    return "<tr>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + f"<td>{status}</td></tr>"


def runs_html(res: Results) -> str:
    head = ["run id", "model", "method", "seed", "device", *ENV_PACKAGES, "python", "git commit", "started",
            "ended", "status"]
    rows = "".join(_env_row(r) for r in sorted(res.runs.values(), key=lambda r: r.run_id))
    return (f'<div class="wide"><table><thead><tr>{"".join(f"<th>{_e(h)}</th>" for h in head)}</tr></thead>'
            f"<tbody>{rows}</tbody></table></div>")


def _continued(command: str, width: int = 100) -> str:
    """A long command as shell lines joined by backslashes: readable, and still pastes as one command."""
    if len(command) <= width:
        return command
    lines: list[list[str]] = [[]]
    for token in shlex.split(command):
        if token.startswith("--") and lines[-1]:
            lines.append([])
        lines[-1].append(shlex.quote(token))
    return " \\\n    ".join(" ".join(line) for line in lines)


def commands_html(cmds: list[Command]) -> str:
    parts = []
    for cmd in cmds:
        origin = "as recorded in run.json" if cmd.recorded else "reconstructed from run.json config"
        parts.append(f'<p class="small">{len(cmd.run_ids)} run(s), {origin}, git commit '
                     f"{_e(', '.join(sorted(cmd.commits)))}</p><pre>{_e(_continued(cmd.text))}</pre>")
        if cmd.settings:
            parts.append("<details><summary class=small>method settings as recorded (pass the ones that differ "
                         "from that commit's defaults as --set METHOD.KEY=VALUE)</summary><pre>"
                         + _e("\n".join(f"{label}: {json.dumps(settings, sort_keys=True)}"
                                        for label, settings in cmd.settings.items()))
                         + "</pre></details>")
    return "\n".join(parts)


def page(res: Results, sources: list[str], tables: list[Table], figures: list[Figure], cmds: list[Command]) -> str:
    """The whole report as one HTML document."""
    ok = len(res.ok_runs())
    toc = " · ".join(f'<a href="#{_e(t.name)}">{_e(t.name)}</a>' for t in tables)
    notes = "".join(f"<li>{_e(n)}</li>" for n in res.notes)
    body = [
        "<h1>peft-bench report</h1>",
        f'<p class="small">generated {datetime.now(timezone.utc).isoformat(timespec="seconds")} from '
        f"{_e(', '.join(sources))}: {ok} finished run(s), {len(res.runs) - ok} not finished</p>",
        f'<p class="small">tables: {toc}</p>' if toc else "",
        f'<ul class="notes">{notes}</ul>' if notes else "",
        "<h2>Tables</h2>", *(table_html(t) for t in tables),
        "<h2>Figures</h2>", '<div class="figs">', *(figure_html(f) for f in figures), "</div>",
        "<h2>Runs and environments</h2>", runs_html(res),
        "<h2>Commands</h2>", commands_html(cmds),
    ]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>peft-bench report</title>"
            f"<style>{CSS}</style></head><body>\n" + "\n".join(b for b in body if b) + "\n</body></html>\n")
