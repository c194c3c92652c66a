"""Per-matrix sensitivity from a diagonal Hessian estimate (SPEC.md, "Sensitivity").

dE ~ 1/2 sum_i h_ii dw_i^2 near a minimum with a diagonally dominant Hessian, so the diagonal
entries h_ii score weights; a matrix is scored by their sum (global) and by how they are spread
over its entries (local).
"""
from __future__ import annotations

import math
from typing import Iterable

import torch
from torch import nn

ESTIMATORS = ("fisher", "hutchinson")
LOCAL_METRICS = ("effective_rank", "topk")


def diag_hessian(model: nn.Module, weights: dict[str, nn.Parameter], batches: Iterable[dict[str, torch.Tensor]],
                 estimator: str = "fisher", seed: int = 0) -> dict[str, torch.Tensor]:
    """Mean over ``batches`` of a per-entry estimate of h_ii for every weight (fp32, weight-shaped).

    * ``fisher``: squared batch gradient (empirical Fisher), one backward per batch;
    * ``hutchinson``: z * (H z) with Rademacher z, one double backward per batch; attention is
      forced onto SDPA's math kernel, whose backward is itself differentiable. Single-probe
      estimates can be negative; the magnitude |mean| is returned (curvature size is what scores).

    Uses ``torch.autograd.grad``, so no ``.grad`` buffer is left behind on any parameter.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    names, params = list(weights), list(weights.values())
    sums = [torch.zeros_like(p, dtype=torch.float32) for p in params]
    gen = torch.Generator(device=params[0].device).manual_seed(seed)
    n = 0
    for batch in batches:
        if estimator == "fisher":
            grads = torch.autograd.grad(model(**batch).loss, params)
            for acc, g in zip(sums, grads):
                acc.add_(g.float() ** 2)
        else:
            from torch.nn.attention import SDPBackend, sdpa_kernel

            with sdpa_kernel(SDPBackend.MATH):
                grads = torch.autograd.grad(model(**batch).loss, params, create_graph=True)
                zs = [torch.randint(0, 2, p.shape, generator=gen, device=p.device).to(p.dtype) * 2 - 1 for p in params]
                hz = torch.autograd.grad(grads, params, grad_outputs=zs)
            for acc, z, v in zip(sums, zs, hz):
                acc.add_((z * v).float())
        n += 1
    if n == 0:
        raise ValueError("no calibration batches")
    return {name: (acc / n).abs_() if estimator == "hutchinson" else acc / n for name, acc in zip(names, sums)}


def local_sensitivity(h: torch.Tensor, metric: str = "effective_rank", topk_fraction: float = 0.01) -> float:
    """How the sensitivity of one matrix is spread over its entries.

    * ``effective_rank``: exp(entropy of the normalised singular values of h as an out x in
      matrix), in [1, min(out, in)]: many directions matter -> more rank is useful;
    * ``topk``: share of tr(H_w) held by the largest ``topk_fraction`` of entries.
    """
    if metric == "effective_rank":
        s = torch.linalg.svdvals(h.double())
        p = s[s > 0] / s.sum()
        return math.exp(float(-(p * p.log()).sum())) if p.numel() else 0.0
    if metric == "topk":
        total = float(h.sum())
        k = max(1, math.ceil(topk_fraction * h.numel()))
        return float(torch.topk(h.flatten(), k).values.sum()) / total if total > 0 else 0.0
    raise ValueError(f"local metric must be one of {LOCAL_METRICS}, got {metric!r}")


def combine(global_s: dict[str, float], local_s: dict[str, float], beta: float) -> dict[str, float]:
    """S_w = G~_w^beta * L~_w^(1 - beta), each metric normalised to sum 1 over the targets.

    beta = 1 is global-only, beta = 0 local-only. (Any constant normalisation gives the same
    allocation; sum-normalising makes the recorded values comparable across runs.)
    """
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    g_total, l_total = sum(global_s.values()) or 1.0, sum(local_s.values()) or 1.0
    return {w: (global_s[w] / g_total) ** beta * (local_s[w] / l_total) ** (1.0 - beta) for w in global_s}
