"""``bench synth``: the Localized LoRA paper's synthetic experiment (SPEC.md, "The paper's synthetic experiment").

Fit a target matrix M with dW of each structure at one parameter budget (LoRA rank r):

* global LoRA, rank r;  fully localized, K x K blocks of rank r/K;  diagonal-local, K blocks of rank r,

by Adam on ||dW - M||_F^2, and set the reached error beside the closed-form best error (blocks
are independent, so the optimum is a truncated SVD per adapted block). Errors are relative to
||M||_F^2. The targets cover both regimes on purpose: block-structured targets favour the
localized structures, a globally low-rank target favours LoRA.

The adapters are our own ``LocalizedLinear`` layers (K = 1 grid is plain LoRA), so the fits also
exercise the layer the benchmark trains.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd
import torch
from torch import nn

from methods.localized_lora.layer import LocalizedLinear

STRUCTURES = ("global", "localized", "diagonal")


def _orthonormal(n: int, k: int, g: torch.Generator) -> torch.Tensor:
    return torch.linalg.qr(torch.randn(n, k, generator=g))[0]


def _blocks(m: torch.Tensor, k: int) -> torch.Tensor:
    """(K, K, m/K, n/K) view of the K x K grid of M."""
    return m.reshape(k, m.shape[0] // k, k, m.shape[1] // k).permute(0, 2, 1, 3)


def make_targets(size: int, k: int, seed: int) -> dict[str, torch.Tensor]:
    """Target families, each scaled to ||M||_F = 1.

    * block-lowrank: every block independently of rank 4 (global rank up to 4 K^2);
    * block-diagonal: only the K diagonal blocks, each of rank 16, the rest zero (block-sparse);
    * global-lowrank: one rank-16 matrix, blocks share its subspaces;
    * decaying: random singular vectors, singular values l^-1 (no structure, a heavy tail).
    """
    g = torch.Generator().manual_seed(seed)
    b = size // k

    def lowrank(rows: int, cols: int, rank: int) -> torch.Tensor:
        return torch.randn(rows, rank, generator=g) @ torch.randn(rank, cols, generator=g)

    grid = torch.stack([torch.stack([lowrank(b, b, 4) for _ in range(k)]) for _ in range(k)])
    targets = {
        "block-lowrank": grid.permute(0, 2, 1, 3).reshape(size, size),
        "block-diagonal": torch.block_diag(*[lowrank(b, b, 16) for _ in range(k)]),
        "global-lowrank": lowrank(size, size, 16),
        "decaying": _orthonormal(size, size, g) @ torch.diag(1.0 / torch.arange(1, size + 1)) @ _orthonormal(size, size, g).T,
    }
    return {name: m / m.norm() for name, m in targets.items()}


def _tail(s: torch.Tensor, keep: int) -> float:
    """Energy left by the best rank-``keep`` approximation: sum_{l > keep} s_l^2 (s: (..., l))."""
    return float((s[..., keep:] ** 2).sum())


def best_error(m: torch.Tensor, structure: str, r: int, k: int) -> float:
    """Closed-form minimum of ||dW - M||_F^2 / ||M||_F^2 under ``structure`` at budget r (in float64)."""
    m = m.double()
    total = float((m**2).sum())
    if structure == "global":
        return _tail(torch.linalg.svdvals(m), r) / total
    blocks = _blocks(m, k)
    if structure == "localized":
        return _tail(torch.linalg.svdvals(blocks), r // k) / total
    diag = blocks[range(k), range(k)]
    off = total - float((diag**2).sum())
    return (_tail(torch.linalg.svdvals(diag), r) + off) / total


def _adapter(structure: str, size: int, r: int, k: int) -> LocalizedLinear:
    """An adapter with scaling 1 on a zero base layer, so its delta weight is B A itself."""
    base = nn.Linear(size, size, bias=False)
    nn.init.zeros_(base.weight)
    base.requires_grad_(False)
    if structure == "global":
        return LocalizedLinear(base, "grid", 1, r, 1.0)
    if structure == "localized":
        return LocalizedLinear(base, "grid", k, r // k, 1.0)
    return LocalizedLinear(base, "diagonal", k, r, 1.0)


def fit(m: torch.Tensor, structure: str, r: int, k: int, steps: int, lr: float, seed: int) -> float:
    """Adam with cosine decay on ||dW - M||^2 / ||M||^2; returns the final relative error."""
    torch.manual_seed(seed)
    layer = _adapter(structure, m.shape[0], r, k)
    params = [layer.lora_A, layer.lora_B]
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps)))
    total = (m**2).sum()
    for _ in range(steps):
        loss = ((layer.delta_weight() - m) ** 2).sum() / total
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    # scored in float64 like the optimum: a float32 product B A carries rounding noise of full rank
    # that could "beat" the rank-r optimum by ~1e-10
    layer.double()
    with torch.no_grad():
        m64 = m.double()
        return float(((layer.delta_weight() - m64) ** 2).sum() / (m64**2).sum())


def synthetic_experiment(size: int = 256, num_blocks: int = 4, ranks: Sequence[int] = (4, 8, 16, 32),
                         steps: int = 300, lr: float = 0.02, seed: int = 0,
                         log: Callable[[str], None] | None = None) -> pd.DataFrame:
    """One row per (target, budget r, structure): trainable params, best and reached relative error.

    Runs single-threaded: the ops are tiny (256 x 256), so threads only add synchronisation,
    and on a shared 2-core machine two threads made it ~8x slower.
    """
    if size % num_blocks or any(r % num_blocks for r in ranks):
        raise ValueError(f"num_blocks={num_blocks} must divide size={size} and every rank in {list(ranks)}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rows = []
    try:
        for name, m in make_targets(size, num_blocks, seed).items():
            t0 = time.perf_counter()
            for r in ranks:
                for structure in STRUCTURES:
                    layer = _adapter(structure, size, r, num_blocks)
                    best = best_error(m, structure, r, num_blocks)
                    reached = fit(m, structure, r, num_blocks, steps, lr, seed)
                    rows.append({"target": name, "r": r, "structure": structure,
                                 "params": layer.lora_A.numel() + layer.lora_B.numel(),
                                 "best_rel_err": best, "reached_rel_err": reached, "gap": reached - best})
            if log:
                log(f"{name}: {time.perf_counter() - t0:.1f}s")
    finally:
        torch.set_num_threads(threads)
    return pd.DataFrame(rows)


def to_markdown(table: pd.DataFrame) -> str:
    """A GitHub table; errors with 4 significant digits."""
    def cell(v: object) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(table.columns) + " |", "|" + "|".join("---" for _ in table.columns) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def plot(table: pd.DataFrame, path_stem: Path) -> None:
    """One panel per target: relative error against budget r; markers reached, dashed the optimum."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    targets = list(dict.fromkeys(table["target"]))
    fig, axes = plt.subplots(1, len(targets), figsize=(3.2 * len(targets), 3.0), sharey=True, squeeze=False)
    for ax, name in zip(axes[0], targets):
        part = table[table["target"] == name]
        for color, structure in zip(("C0", "C1", "C2"), STRUCTURES):
            rows = part[part["structure"] == structure]
            ax.plot(rows["r"], rows["best_rel_err"], "--", color=color, alpha=0.6)
            ax.plot(rows["r"], rows["reached_rel_err"], "o", color=color, label=structure)
        ax.set_title(name)
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted(set(part["r"])), [str(r) for r in sorted(set(part["r"]))])
        ax.set_xlabel("budget: LoRA rank r")
    axes[0][0].set_ylabel("||dW - M||² / ||M||²")
    axes[0][0].legend(title="reached (dashed: optimum)", fontsize=7, title_fontsize=7)
    fig.tight_layout()
    for ext in ("png", "svg"):
        fig.savefig(path_stem.with_suffix(f".{ext}"), dpi=150)
    plt.close(fig)


def main(out_dir: str | Path, size: int = 256, num_blocks: int = 4, ranks: Sequence[int] = (4, 8, 16, 32),
         steps: int = 300, lr: float = 0.02, seed: int = 0) -> pd.DataFrame:
    """Run the experiment, write synth.csv / synth.md / synth.png / synth.svg into ``out_dir``, print the table."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = synthetic_experiment(size, num_blocks, ranks, steps, lr, seed, log=print)
    table.to_csv(out / "synth.csv", index=False)
    md = to_markdown(table)
    (out / "synth.md").write_text(
        f"Synthetic fit, {size}x{size} targets, K={num_blocks}, Adam {steps} steps (lr {lr}), seed {seed}; "
        "errors relative to ||M||_F^2, best = closed-form optimum of the structure.\n\n" + md)
    plot(table, out / "synth")
    print(md)
    return table
