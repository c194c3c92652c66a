"""Gradient-based importance of weights and the greedy choice of a subnet (R, C) from it."""
from __future__ import annotations

import torch

STRATEGIES = ("independent", "rows_first", "cols_first")


def importance(theta: torch.Tensor, grad: torch.Tensor, kind: str = "param_mix") -> torch.Tensor:
    """Elementwise sensitivity from s = theta * g (a Taylor estimate of the loss change on removal)."""
    s = theta * grad
    if kind == "param_mix":
        return s.mul(s).mul_(-0.5).add_(s).abs_()  # |s - s^2/2|, one temporary
    if kind == "param_first":
        return s.abs_()
    if kind == "param_second":
        return s.mul_(s)
    raise ValueError(f"unknown importance kind {kind!r}")


class ImportanceTracker:
    """EMA of importance and of its uncertainty over one profiling window (full-size buffers).

    Allocated on the window's first update and dropped when the window ends, so these
    accumulators exist for one layer at a time (asynchronous schedule).
    """

    def __init__(self, kind: str, beta1: float, beta2: float) -> None:
        self.kind, self.beta1, self.beta2 = kind, beta1, beta2
        self.i_bar: torch.Tensor | None = None
        self.u_bar: torch.Tensor | None = None

    @torch.no_grad()
    def update(self, theta: torch.Tensor, grad: torch.Tensor) -> None:
        ipt = importance(theta.float(), grad.float(), self.kind)
        if self.i_bar is None:
            self.i_bar = torch.zeros_like(ipt)
            self.u_bar = torch.zeros_like(ipt)
        # lerp_(x, 1 - b) is b * acc + (1 - b) * x in one pass; ipt is reused for |I - I_bar|
        self.i_bar.lerp_(ipt, 1.0 - self.beta1)
        self.u_bar.lerp_(ipt.sub_(self.i_bar).abs_(), 1.0 - self.beta2)

    def score(self) -> torch.Tensor | None:
        return None if self.i_bar is None else self.i_bar * self.u_bar

    def reset(self) -> None:
        self.i_bar = self.u_bar = None


def _top(values: torch.Tensor, k: int) -> torch.Tensor:
    return torch.topk(values, k, sorted=False).indices.sort().values


def candidates(score: torch.Tensor, n_rows: int, n_cols: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The three greedy (R, C) candidates of the spec, each with sorted index tensors."""
    rows = _top(score.sum(1), n_rows)
    cols = _top(score.sum(0), n_cols)
    return {
        "independent": (rows, cols),
        "rows_first": (rows, _top(score.index_select(0, rows).sum(0), n_cols)),
        "cols_first": (_top(score.index_select(1, cols).sum(1), n_rows), cols),
    }


def block_sum(score: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> float:
    return float(score.index_select(0, rows).index_select(1, cols).sum())


def relocalize(score: torch.Tensor, n_rows: int, n_cols: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(R, C, strategy) maximising the block's importance sum; ties keep the earlier strategy."""
    best: tuple[torch.Tensor, torch.Tensor, str] | None = None
    best_sum = 0.0
    for name, (rows, cols) in candidates(score, n_rows, n_cols).items():
        total = block_sum(score, rows, cols)
        if best is None or total > best_sum:
            best, best_sum = (rows, cols, name), total
    assert best is not None
    return best
