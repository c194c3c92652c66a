"""Figures for the report, each saved as PNG and SVG (matplotlib, Agg backend: no display).

Accuracy and cost figures are drawn from the built ``Table`` objects rather than from raw
rows, so a figure shows exactly the numbers of its table, including what the table refused to
mix. Each function returns the figures it made and makes none when its data is absent.
"""
from __future__ import annotations

import textwrap
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from harness import metrics  # noqa: E402
from harness.metrics import MIB, TRAIN  # noqa: E402
from reports.load import Results, allocated_ranks, reselections  # noqa: E402
from reports.tables import (BASE_LABEL, Cell, Table, first_runs, peak_memory, rank_data,  # noqa: E402
                            sequential_matrix)

MAX_PANELS = 6
BREAKDOWN = [(m, metrics.get(m).plot_label) for m in metrics.names("memory_part")]


@dataclass
class Figure:
    name: str
    title: str
    png: Path
    svg: Path


def _save(fig: plt.Figure, out: Path, name: str, title: str) -> Figure:
    out.mkdir(parents=True, exist_ok=True)
    fig.suptitle(textwrap.fill(title, int(fig.get_figwidth() * 10)))
    fig.tight_layout()
    png, svg = out / f"{name}.png", out / f"{name}.svg"
    fig.savefig(png, dpi=110, bbox_inches="tight")  # "tight" keeps legends placed outside the axes
    fig.savefig(svg, bbox_inches="tight")
    plt.close(fig)
    return Figure(name, title, png, svg)


def _panels(n: int, width: float = 6.0, height: float = 3.8) -> tuple[plt.Figure, list[plt.Axes]]:
    cols = min(n, 2)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def error_bar(cell: Cell | None) -> tuple[float, float]:
    """(below, above) the cell's mean: its interval (95% CI over items; step time p10-p90), else ± std."""
    if cell is None:
        return 0.0, 0.0
    if cell.interval is not None:
        return max(0.0, cell.mean - cell.interval[0]), max(0.0, cell.interval[1] - cell.mean)
    return cell.std or 0.0, cell.std or 0.0


def error_bars(cells: list[Cell | None]) -> np.ndarray:
    """Matplotlib's asymmetric ``xerr``/``yerr`` (2 x n) for a list of cells."""
    return np.array([error_bar(c) for c in cells]).T.reshape(2, len(cells))


def accuracy_bars(table: Table, out: Path) -> list[Figure]:
    """Per-task accuracy by method with 95% CIs over test items (± std where no samples were kept),
    one panel per model, chance as ticks."""
    models = list(dict.fromkeys(r.keys[0] for r in table.rows if r.keys[0]))[:MAX_PANELS]
    if not models:
        return []
    chance = next((r for r in table.rows if r.keys[1] == "chance"), None)
    fig, axes = _panels(len(models), width=max(6.0, 1.1 * len(table.columns) + 2))
    x = np.arange(len(table.columns))
    for ax, model in zip(axes, models):
        rows = [r for r in table.rows if r.keys[0] == model  # not --vs difference rows: points, not accuracy
                and not any(c.show_interval for c in r.cells.values())]
        width = 0.8 / max(1, len(rows))
        for i, row in enumerate(rows):
            means = [row.cells[c].mean if c in row.cells else np.nan for c in table.columns]
            errs = error_bars([row.cells.get(c) for c in table.columns])
            ax.bar(x + (i - (len(rows) - 1) / 2) * width, means, width, yerr=errs, capsize=2, label=row.keys[1],
                   color="0.75" if row.keys[1] == BASE_LABEL else None, hatch="//" if row.reference else None)
        if chance:
            cx = [i for i, c in enumerate(table.columns) if c in chance.cells]
            ax.scatter(cx, [chance.cells[table.columns[i]].mean for i in cx], marker="_", s=600, c="k",
                       label="chance", zorder=3)
        ax.set_xticks(x, [table.header(c) for c in table.columns], rotation=30, ha="right")
        ax.set_ylabel(metrics.get("acc").plot_label)
        ax.set_title(model)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    return [_save(fig, out, f"accuracy-{table.name}", f"{table.title}; error bars: 95% CI over test items")]


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points no other point beats on both cost (x, lower) and accuracy (y, higher)."""
    front, best = [], -np.inf
    for i in sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1])):
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def pareto(acc: Table, efficiency: list[Table], out: Path) -> list[Figure]:
    """Average accuracy against step time and against peak memory; the Pareto front joined and ringed."""
    avg = {r.keys: r.cells["Avg"] for r in acc.rows if not r.reference and "Avg" in r.cells}
    figures = []
    for metric, xlabel in ((m, metrics.get(m).plot_label) for m in ("step_time_s", metrics.PEAK)):
        cells = [(t, [(r.keys, r.cells[metric], avg[r.keys]) for r in t.rows
                      if metric in r.cells and r.keys in avg]) for t in efficiency]
        panels = [(t, [(k + (("!",) if x.flag == "busy" else ()), x.mean, y.mean) for k, x, y in pts])
                  for t, pts in cells]  # "!": step time measured on a busy machine (table note)
        bars = {t.name: (error_bars([x for _, x, _ in pts]), error_bars([y for _, _, y in pts])) for t, pts in cells}
        panels = [(t, pts) for t, pts in panels if pts][:MAX_PANELS]
        if not panels:
            continue
        fig, axes = _panels(len(panels))
        for ax, (table, pts) in zip(axes, panels):
            xy = [(x, y) for _, x, y in pts]
            front = sorted(pareto_front(xy), key=lambda i: xy[i][0])
            ax.errorbar(*zip(*xy), xerr=bars[table.name][0], yerr=bars[table.name][1], fmt="o", capsize=3,
                        zorder=3, label="median, p10-p90 x 95% CI" if metric == "step_time_s" else "95% CI")
            middle = sum(ax.get_xlim()) / 2
            for (keys, x, y) in pts:  # labels point inwards so none runs off the figure
                ax.annotate(" / ".join(k for k in keys if k), (x, y), fontsize=7, textcoords="offset points",
                            xytext=(-4 if x > middle else 4, 4), ha="right" if x > middle else "left")
            ax.plot([xy[i][0] for i in front], [xy[i][1] for i in front], "r--", drawstyle="steps-post",
                    label="Pareto front")
            ax.scatter([xy[i][0] for i in front], [xy[i][1] for i in front], s=160, facecolors="none",
                       edgecolors="r", zorder=4)
            ax.set_xlabel(f"{xlabel}, {table.header(metric)}" if metric == metrics.PEAK else xlabel)
            ax.set_ylabel(f"avg accuracy (%), {acc.name}")
            ax.set_title(table.title.replace("Efficiency on ", ""), fontsize=9)
            ax.legend(fontsize=7)
        figures.append(_save(fig, out, f"pareto-{metric.split('_')[0]}-{acc.name}",
                             f"Accuracy vs {xlabel} (ringed: Pareto front of the means; bars: accuracy 95% CI "
                             f"over test items" + (", step time p10-p90)" if metric == "step_time_s" else ")")))
    return figures


def memory_breakdown(res: Results, out: Path) -> list[Figure]:
    """Stacked bars of the deterministic memory parts per method; the measured peak as a marker."""
    costs = res.df[res.df.phase == TRAIN]
    parts = costs[costs.metric.isin([m for m, _ in BREAKDOWN])]
    if parts.empty:
        return []
    peak = peak_memory(costs)
    devices = sorted(set(parts.device))[:MAX_PANELS]
    fig, axes = _panels(len(devices), width=9.0, height=max(2.5, 0.5 * parts.label.nunique() + 1.5))
    for ax, device in zip(axes, devices):
        mine = parts[parts.device == device]
        wide = mine.pivot_table(index=["model", "label"], columns="metric", values="value", aggfunc="mean") * MIB
        names = [" / ".join(k) for k in wide.index]
        left = np.zeros(len(wide))
        for metric, label in BREAKDOWN:
            if metric in wide:
                values = wide[metric].fillna(0).to_numpy()
                ax.barh(names, values, left=left, label=label)
                left += values
        measured = peak[peak.device == device].groupby(["model", "label"]).value.mean() * MIB
        ys = [i for i, k in enumerate(wide.index) if k in measured.index]
        ax.scatter([measured[wide.index[i]] for i in ys], ys, marker="D", c="k", zorder=3,
                   label="measured peak (allocator)" if device.startswith("cuda") else "measured peak (RSS)")
        ax.set_xlabel("MiB")
        ax.set_title(device, fontsize=9)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    return [_save(fig, out, "memory-breakdown", "Memory breakdown (activations: one profiled step)")]


def loss_curves(res: Results, out: Path, smooth: int = 5) -> list[Figure]:
    """Training loss per step, mean over seeds (band: min-max), one panel per model and training set."""
    rows = [{"model": r.config.get("model"), "train": "+".join(r.config.get("train_tasks", [])), "label": r.label,
             "seed": r.config.get("seed"), "step": s["step"], "loss": s["loss"]}
            for r in res.ok_runs() for s in r.steps]
    if not rows:
        return []
    steps = pd.DataFrame(rows)
    groups = list(steps.groupby(["model", "train"]))[:MAX_PANELS]
    fig, axes = _panels(len(groups))
    for ax, ((model, train), g) in zip(axes, groups):
        for label, h in g.groupby("label"):
            per_step = h.groupby("step").loss.agg(["mean", "min", "max"])
            smoothed = per_step.rolling(smooth, min_periods=1).mean()
            ax.plot(smoothed.index, smoothed["mean"], label=f"{label} ({h.seed.nunique()} seeds)")
            if h.seed.nunique() > 1:
                ax.fill_between(smoothed.index, smoothed["min"], smoothed["max"], alpha=0.2)
        ax.set_xlabel("step")
        ax.set_ylabel("training loss")
        ax.set_title(f"{model} on {train if len(train) < 40 else str(train.count('+') + 1) + ' tasks'}", fontsize=9)
        ax.legend(fontsize=7)
    return [_save(fig, out, "loss-curves", f"Training loss (rolling mean over {smooth} steps)")]


def _heatmap(ax: plt.Axes, matrix: np.ndarray, rows: list[str], cols: list[str], cmap: str,
             vmin: float | None = None, vmax: float | None = None, digits: int = 1) -> None:
    image = ax.imshow(matrix, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=30, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    if matrix.size <= 200:
        for (i, j), v in np.ndenumerate(matrix):
            if not np.isnan(v):
                r, g, b, _ = image.cmap(image.norm(v))
                ax.text(j, i, f"{v:.{digits}f}", ha="center", va="center", fontsize=7,
                        color="white" if 0.299 * r + 0.587 * g + 0.114 * b < 0.5 else "black")
    ax.figure.colorbar(image, ax=ax)


def forgetting_heatmap(table: Table, out: Path) -> list[Figure]:
    """Forgetting per method and retention task; red = accuracy lost, blue = gained."""
    rows = [r for r in table.rows if not r.reference]
    if not rows:
        return []
    matrix = np.array([[r.cells[c].mean if c in r.cells else np.nan for c in table.columns] for r in rows])
    bound = float(np.nanmax(np.abs(matrix))) or 1.0
    fig, axes = _panels(1, width=max(6.0, 0.9 * len(table.columns) + 3), height=0.5 * len(rows) + 2)
    _heatmap(axes[0], matrix, [" / ".join(r.keys) for r in rows], [table.header(c) for c in table.columns],
             "RdBu_r", -bound, bound)
    return [_save(fig, out, "forgetting-heatmap", table.title)]


def sequential_heatmaps(res: Results, out: Path) -> list[Figure]:
    """R[i][j] (accuracy on task j after stage i), averaged over the seeds of each method."""
    by_label: dict[tuple[str, str], list[pd.DataFrame]] = {}
    for run in res.ok_runs():
        matrix = sequential_matrix(res.df, run.run_id)
        if not matrix.empty:
            by_label.setdefault((run.config.get("model", "?"), run.label), []).append(matrix * metrics.get("acc").scale)
    if not by_label:
        return []
    items = sorted(by_label.items())[:MAX_PANELS]
    fig, axes = _panels(len(items))
    for ax, ((model, label), mats) in zip(axes, items):
        mean = pd.concat(mats).groupby(level=0, sort=False).mean()
        _heatmap(ax, mean.to_numpy(), list(mean.index), list(mean.columns), "viridis", 0, 100)
        ax.set_title(f"{model} / {label} ({len(mats)} runs)", fontsize=9)
        ax.set_xlabel("evaluated task")
        ax.set_ylabel("after stage")
    return [_save(fig, out, "sequential-accuracy", "Sequential training: accuracy (%) after each stage")]


def rank_allocation(res: Results, out: Path) -> list[Figure]:
    """Allocated rank per layer (rows) and matrix type (columns), one panel per method."""
    runs = first_runs(res, lambda r: bool(allocated_ranks(r.record)))[:MAX_PANELS]
    if not runs:
        return []
    fig, axes = _panels(len(runs), height=4.5)
    for ax, run in zip(axes, runs):
        wide = rank_data(run).pivot_table(index="layer", columns="matrix", values="value", sort=False)
        _heatmap(ax, wide.to_numpy(dtype=float), list(wide.index), list(wide.columns), "magma_r", digits=0)
        ax.set_ylabel("layer")
        ax.set_title(f"{run.config.get('model')} / {run.label} (seed {run.config.get('seed')})", fontsize=9)
    return [_save(fig, out, "rank-allocation", "Allocated ranks per layer and matrix")]


def reselection_timeline(res: Results, out: Path) -> list[Figure]:
    """LoSiA's subnet re-selections: when (step) each layer's matrices were re-chosen."""
    runs = first_runs(res, lambda r: bool(reselections(r.record)))[:MAX_PANELS]
    if not runs:
        return []
    fig, axes = _panels(len(runs))
    for ax, run in zip(axes, runs):
        log = pd.DataFrame(reselections(run.record))
        log["layer"] = log.layer.astype(str)
        layers = sorted(set(log.layer), key=lambda x: (not x.isdigit(), int(x) if x.isdigit() else 0, x))
        log["y"] = log.layer.map({name: i for i, name in enumerate(layers)})
        for matrix, g in log.groupby(log.get("matrix", pd.Series("all", index=log.index))):
            ax.scatter(g.step, g.y, s=14, label=str(matrix))
        ax.set_yticks(range(len(layers)), layers)
        ax.set_xlabel("step")
        ax.set_ylabel("layer")
        ax.set_title(f"{run.config.get('model')} / {run.label} ({len(log)} re-selections)", fontsize=9)
        ax.legend(fontsize=7, ncol=2)
    return [_save(fig, out, "losia-reselections", "LoSiA subnet re-selection timeline")]
