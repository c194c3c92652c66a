"""Integer LoRA ranks proportional to sensitivity under uniform LoRA's parameter budget.

Matrices of different shapes (GQA k/v, MLP) cost different parameters per rank, c_w = d_in + d_out,
so the budget is uniform LoRA's *parameters*, P = r * sum_w c_w (SPEC.md's choice), and ranks stay
proportional to sensitivity: r_w = clip(lam * S_w, lo_w, hi_w) with lam solving sum r_w c_w = P.
With equal shapes this is r_w = R S_w / sum S with R = r * (number of targets), SPEC.md's rule;
with equal sensitivities it is uniform LoRA.

Rounding: floors, then +1 by largest fractional remainder while the increment still fits in the
budget. With equal shapes the total is exactly R ranks / P parameters; otherwise the spent
parameters lie in (P - max_w c_w, P]: never above uniform LoRA, below it by less than one rank
step of one matrix (the granularity integer ranks allow).
"""
from __future__ import annotations

import math


def allocate(scores: dict[str, float], shapes: dict[str, tuple[int, int]], r: int, r_min: int = 0,
             r_max: int | None = None) -> dict[str, int]:
    """Ranks per matrix name; ``shapes`` are (out, in). hi_w = min(r_max, out, in): beyond full
    rank a LoRA factor adds parameters but no expressiveness."""
    names = list(scores)
    if any(scores[w] < 0 or not math.isfinite(scores[w]) for w in names):
        raise ValueError("sensitivity scores must be finite and non-negative")
    cost = {w: sum(shapes[w]) for w in names}
    budget = r * sum(cost.values())
    hi = {w: min(shapes[w]) if r_max is None else min(r_max, *shapes[w]) for w in names}
    lo = {w: min(r_min, hi[w]) for w in names}
    if sum(lo[w] * cost[w] for w in names) > budget or sum(hi[w] * cost[w] for w in names) < budget:
        raise ValueError(f"budget of {budget} parameters (uniform rank {r}) cannot be met within "
                         f"r_min={r_min} / r_max={r_max} / full rank")
    if not any(scores.values()):
        raise ValueError("all sensitivities are zero")

    def ranks(lam: float) -> dict[str, float]:
        return {w: min(hi[w], max(lo[w], lam * scores[w])) for w in names}

    def spent(x: dict[str, float]) -> float:
        return sum(x[w] * cost[w] for w in names)

    low, high = 0.0, 1.0
    while spent(ranks(high)) < budget:
        high *= 2.0
    for _ in range(200):  # bisection on lam: spent() is continuous and non-decreasing
        mid = 0.5 * (low + high)
        low, high = (mid, high) if spent(ranks(mid)) < budget else (low, mid)
    real = ranks(low)  # spends < budget, so the floors always leave a non-negative remainder
    out = {w: int(math.floor(real[w])) for w in names}
    left = budget - sum(out[w] * cost[w] for w in names)
    for w in sorted(names, key=lambda w: (-(real[w] - out[w]), w)):
        if out[w] < hi[w] and cost[w] <= left:
            out[w] += 1
            left -= cost[w]
    return out
