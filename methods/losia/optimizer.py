"""AdamW on subnet blocks (plus dense parameters) and the re-warming learning-rate schedule."""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Callable

import torch
from torch import nn

from methods.base import warmup_cosine
from methods.losia.layer import Subnet


def _adam_moments(grads: list[torch.Tensor], exp_avgs: list[torch.Tensor], exp_avg_sqs: list[torch.Tensor],
                  step: int, betas: tuple[float, float], eps: float) -> tuple[list[torch.Tensor], float]:
    """Advance Adam's moments in place; return the denominators and the bias correction of m.

    One step count per call keeps every foreach op on its scalar fast path (scalar lists cost a
    tensor conversion per element on CPU); callers bucket tensors by step count.
    """
    beta1, beta2 = betas
    torch._foreach_lerp_(exp_avgs, grads, 1.0 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1.0 - beta2)
    denom = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_div_(denom, math.sqrt(1.0 - beta2**step))
    torch._foreach_add_(denom, eps)
    return denom, 1.0 / (1.0 - beta1**step)


class SubnetAdamW(torch.optim.Optimizer):
    """AdamW whose moments for a target weight have the shape of its block W[R, C].

    One param group per schedule slot (a decoder layer, or lm_head) so that re-warming can
    restart one layer's LR alone, plus one group of dense parameters updated as plain AdamW.
    State is keyed by the full weight, so the generic optimizer-state accounting applies.
    """

    def __init__(self, slots: list[list[Subnet]], dense: list[nn.Parameter], lr: float,
                 betas: tuple[float, float], eps: float, weight_decay: float, grad_scale: float = 1.0) -> None:
        groups: list[dict[str, Any]] = [
            {"params": [s.weight for s in subnets], "subnets": subnets, "slot": slot}
            for slot, subnets in enumerate(slots)
        ]
        if dense:
            groups.append({"params": list(dense), "subnets": None, "slot": None})
        super().__init__(groups, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))
        self.grad_scale = grad_scale

    def subnets(self) -> list[Subnet]:
        return [s for g in self.param_groups if g["subnets"] for s in g["subnets"]]

    def _state(self, key: torch.Tensor, like: torch.Tensor) -> dict[str, Any]:
        state = self.state[key]
        if not state:
            state.update(step=0, exp_avg=torch.zeros_like(like), exp_avg_sq=torch.zeros_like(like))
        state["step"] += 1
        return state

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            if group["subnets"] is None:
                items = [(p, p.grad) for p in group["params"] if p.grad is not None]
            else:
                items = [(s, s.block_grad()) for s in group["subnets"] if s.block_grad() is not None]
            buckets: dict[int, list[tuple[Any, torch.Tensor, dict[str, Any]]]] = defaultdict(list)
            for target, grad in items:
                state = self._state(target if group["subnets"] is None else target.weight, grad)
                buckets[state["step"]].append((target, grad, state))
            for step, bucket in buckets.items():
                self._update(group, step, bucket)
        return loss

    def _update(self, group: dict[str, Any], step: int, bucket: list[tuple[Any, torch.Tensor, dict[str, Any]]]) -> None:
        lr, wd = group["lr"], group["weight_decay"]
        targets = [t for t, _, _ in bucket]
        grads = [g for _, g, _ in bucket]
        if group["subnets"] is not None and self.grad_scale != 1.0:
            grads = torch._foreach_mul(grads, self.grad_scale)
        exp_avgs = [st["exp_avg"] for _, _, st in bucket]
        denom, correction = _adam_moments(grads, exp_avgs, [st["exp_avg_sq"] for _, _, st in bucket],
                                          step, group["betas"], group["eps"])
        if group["subnets"] is None:
            if wd:
                torch._foreach_mul_(targets, 1.0 - lr * wd)
            torch._foreach_addcdiv_(targets, exp_avgs, denom, -lr * correction)
            return
        updates = torch._foreach_div(exp_avgs, denom)
        torch._foreach_mul_(updates, -lr * correction)
        if wd:  # decoupled decay of the block only: W[R, C] <- W[R, C] (1 - lr wd) + update
            blocks = [s.take(s.weight) for s in targets]
            torch._foreach_mul_(blocks, 1.0 - lr * wd)
            torch._foreach_add_(blocks, updates)
            for s, block in zip(targets, blocks):
                s.write_block(block)
        else:
            for s, update in zip(targets, updates):
                s.add_to_block(update)

    def zero_grad(self, set_to_none: bool = True) -> None:
        super().zero_grad(set_to_none=set_to_none)
        for s in self.subnets():
            s.clear_grads()

    def reset(self, subnet: Subnet) -> None:
        """Forget a re-selected block's moments (they belonged to other weights)."""
        self.state.pop(subnet.weight, None)


class RewarmSchedule:
    """Per-group LR: warm-up + cosine envelope, times a linear re-warm-up after a re-selection.

    ``last_step`` is the index of the optimizer step the current LRs are for. ``rewarm(slot)``
    called after step t makes that slot's LR for steps t+1, t+2, ... be envelope * k/T for
    k = 1, 2, ..., T, then the envelope again; other slots and the dense group are untouched.
    """

    def __init__(self, optimizer: SubnetAdamW, warmup: int, total: int, min_ratio: float,
                 period: int, rewarm: bool) -> None:
        self.optimizer = optimizer
        self.warmup, self.total, self.min_ratio = warmup, total, min_ratio
        self.period, self.enabled = period, rewarm
        self.base_lrs = [g["lr"] for g in optimizer.param_groups]
        self.last_step = 0
        self.restarts: dict[int, int] = {}  # slot -> first step after its latest re-selection
        self._apply()

    def envelope(self, step: int) -> float:
        return warmup_cosine(step, self.warmup, self.total, self.min_ratio)

    def factor(self, slot: int | None, step: int) -> float:
        start = self.restarts.get(slot) if slot is not None else None
        if not self.enabled or start is None:
            return 1.0
        return min(1.0, (step - start + 1) / self.period)

    def _apply(self) -> None:
        env = self.envelope(self.last_step)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * env * self.factor(group["slot"], self.last_step)

    def step(self) -> None:
        self.last_step += 1
        self._apply()

    def rewarm(self, slot: int) -> None:
        self.restarts[slot] = self.last_step
        self._apply()

    def get_last_lr(self) -> list[float]:
        return [g["lr"] for g in self.optimizer.param_groups]
