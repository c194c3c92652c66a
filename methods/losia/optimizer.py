"""Adam on subnet blocks (plus dense parameters) and the per-layer learning-rate schedules.

Two update rules (``compat``, SPEC.md "Spec and release"): ``spec`` is AdamW as torch writes it
everywhere (eps added to the bias-corrected sqrt(v), decoupled decay before the update, the
whole state dropped at a re-selection); ``release`` is the authors' release exactly.
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Callable

import torch
from torch import nn

from methods.base import warmup_cosine
from methods.losia.layer import Subnet

# the release's block optimizer is transformers' old AdamW with its default eps
RELEASE_BLOCK_EPS = 1e-6
# the release's ``cosine`` schedule gives a restarted cycle's first two steps this lr factor
RELEASE_RESTART_FACTOR = 1e-7


def _adam_moments(grads: list[torch.Tensor], exp_avgs: list[torch.Tensor], exp_avg_sqs: list[torch.Tensor],
                  step: int, betas: tuple[float, float], eps: float, corrected_eps: bool
                  ) -> tuple[list[torch.Tensor], float]:
    """Advance Adam's moments in place; return the denominators and the factor on m / denom.

    ``corrected_eps``: eps is added to sqrt(v / (1 - beta2^t)) (torch); otherwise to the
    uncorrected sqrt(v), the correction moving into the factor (transformers' old AdamW, the
    release's). One step count per call keeps every foreach op on its scalar fast path (scalar
    lists cost a tensor conversion per element on CPU); callers bucket tensors by step count.
    """
    beta1, beta2 = betas
    torch._foreach_lerp_(exp_avgs, grads, 1.0 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1.0 - beta2)
    denom = torch._foreach_sqrt(exp_avg_sqs)
    correction2 = math.sqrt(1.0 - beta2**step)
    if corrected_eps:
        torch._foreach_div_(denom, correction2)
        correction2 = 1.0
    torch._foreach_add_(denom, eps)
    return denom, correction2 / (1.0 - beta1**step)


class SubnetAdamW(torch.optim.Optimizer):
    """Adam whose moments for a target weight have the shape of its block W[R, C].

    One param group per schedule slot (a decoder layer, or lm_head) so that re-warming can
    restart one layer's LR alone, plus one group of dense parameters. State is keyed by the full
    weight, so the generic optimizer-state accounting applies.

    ``release=False`` (spec): AdamW with the trainer's eps everywhere, decoupled decay before
    the update. ``release=True``: blocks use eps 1e-6 on the uncorrected sqrt(v) and decay
    W[R, C] after the update; dense parameters are torch Adam (coupled L2: g + wd * theta).
    """

    def __init__(self, slots: list[list[Subnet]], dense: list[nn.Parameter], lr: float,
                 betas: tuple[float, float], eps: float, weight_decay: float, grad_scale: float = 1.0,
                 release: bool = False) -> None:
        groups: list[dict[str, Any]] = [
            {"params": [s.weight for s in subnets], "subnets": subnets, "slot": slot}
            for slot, subnets in enumerate(slots)
        ]
        if dense:
            groups.append({"params": list(dense), "subnets": None, "slot": None})
        super().__init__(groups, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))
        self.grad_scale = grad_scale
        self.release = release

    def subnets(self) -> list[Subnet]:
        return [s for g in self.param_groups if g["subnets"] for s in g["subnets"]]

    def _state(self, key: torch.Tensor, like: torch.Tensor) -> dict[str, Any]:
        state = self.state[key]
        if "exp_avg" not in state:  # new, or re-selected under the release's rule (step kept)
            state.setdefault("step", 0)
            state.update(exp_avg=torch.zeros_like(like), exp_avg_sq=torch.zeros_like(like))
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
                if group["subnets"] is None:
                    self._update_dense(group, step, bucket)
                else:
                    self._update_blocks(group, step, bucket)
        return loss

    def _moments(self, group: dict[str, Any], step: int, bucket: list[tuple[Any, torch.Tensor, dict[str, Any]]],
                 grads: list[torch.Tensor], eps: float, corrected_eps: bool) -> tuple[list[torch.Tensor], float]:
        return _adam_moments(grads, [st["exp_avg"] for _, _, st in bucket], [st["exp_avg_sq"] for _, _, st in bucket],
                             step, group["betas"], eps, corrected_eps)

    def _update_dense(self, group: dict[str, Any], step: int, bucket: list[tuple[Any, torch.Tensor, dict[str, Any]]]
                      ) -> None:
        lr, wd = group["lr"], group["weight_decay"]
        params = [p for p, _, _ in bucket]
        grads = [g for _, g, _ in bucket]
        if wd and self.release:  # torch Adam's coupled L2 decay
            grads = torch._foreach_add(grads, params, alpha=wd)
        elif wd:
            torch._foreach_mul_(params, 1.0 - lr * wd)
        denom, factor = self._moments(group, step, bucket, grads, group["eps"], corrected_eps=True)
        torch._foreach_addcdiv_(params, [st["exp_avg"] for _, _, st in bucket], denom, -lr * factor)

    def _update_blocks(self, group: dict[str, Any], step: int, bucket: list[tuple[Any, torch.Tensor, dict[str, Any]]]
                       ) -> None:
        lr, wd = group["lr"], group["weight_decay"]
        subnets: list[Subnet] = [s for s, _, _ in bucket]
        grads = [g for _, g, _ in bucket]
        if self.grad_scale != 1.0:
            grads = torch._foreach_mul(grads, self.grad_scale)
        eps = RELEASE_BLOCK_EPS if self.release else group["eps"]
        denom, factor = self._moments(group, step, bucket, grads, eps, corrected_eps=not self.release)
        updates = torch._foreach_div([st["exp_avg"] for _, _, st in bucket], denom)
        torch._foreach_mul_(updates, -lr * factor)
        if not wd:
            for s, update in zip(subnets, updates):
                s.add_to_block(update)
            return
        # decay of the block only: spec W[R, C] (1 - lr wd) + update; release (W[R, C] + update)(1 - lr wd)
        blocks = [s.take(s.weight) for s in subnets]
        if self.release:
            torch._foreach_add_(blocks, updates)
            torch._foreach_mul_(blocks, 1.0 - lr * wd)
        else:
            torch._foreach_mul_(blocks, 1.0 - lr * wd)
            torch._foreach_add_(blocks, updates)
        for s, block in zip(subnets, blocks):
            s.write_block(block)

    def zero_grad(self, set_to_none: bool = True) -> None:
        super().zero_grad(set_to_none=set_to_none)
        for s in self.subnets():
            s.clear_grads()

    def reset(self, subnet: Subnet) -> None:
        """A re-selected block's moments belonged to other weights: spec drops the whole state
        (bias correction restarts), release zeroes the moments and keeps the step count."""
        if self.release and subnet.weight in self.state:
            state = self.state[subnet.weight]
            state.pop("exp_avg", None)
            state.pop("exp_avg_sq", None)
        else:
            self.state.pop(subnet.weight, None)


def _cosine(progress: float, min_ratio: float) -> float:
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class LosiaSchedule:
    """Per-group LR: the run-wide envelope for dense parameters, a per-layer rule for subnets.

    ``last_step`` is the index of the optimizer step the current LRs are for. ``rewarm(slot)``
    called after step t records t + 1 as that slot's restart r: the first step trained with its
    new subnet. The envelope is warm-up + cosine to ``min_ratio``; its warm-up is (s+1)/W under
    the spec and s/W (the first update has lr 0) under the release. Subnet rules, T = period:

    - ``spec``: envelope(s) * min(1, (s - r)/T) after a restart, else envelope(s);
    - ``cosine_restarts``: s < W: warm-up; s - r < T: (s - r)/T * envelope(r + W) (the
      release's frozen target, r = 0 before the first restart); else envelope(s);
    - ``cosine``: c = s - r; c < T: c/T (1e-7 for c < 2 once restarted), else a cosine from 1
      to ``min_ratio`` over the rest of the L*T cycle (``cycle``).
    """

    def __init__(self, optimizer: SubnetAdamW, kind: str, warmup: int, total: int, min_ratio: float,
                 period: int, cycle: int, rewarm: bool, release: bool) -> None:
        self.optimizer = optimizer
        self.kind = kind
        self.warmup, self.total, self.min_ratio = warmup, total, min_ratio
        self.period, self.cycle = period, cycle
        self.enabled, self.release = rewarm, release
        self.base_lrs = [g["lr"] for g in optimizer.param_groups]
        self.last_step = 0
        self.restarts: dict[int, int] = {}  # slot -> first step after its latest re-selection
        self._apply()

    def envelope(self, step: int) -> float:
        if self.release and step < self.warmup:
            return step / self.warmup
        return warmup_cosine(step, self.warmup, self.total, self.min_ratio)

    def factor(self, slot: int | None, step: int) -> float:
        if slot is None:
            return self.envelope(step)
        restart = self.restarts.get(slot)
        since = step - (restart or 0)
        if self.kind == "cosine":
            if since < self.period:
                return RELEASE_RESTART_FACTOR if restart and since < 2 else since / self.period
            span = max(1, self.cycle - self.period)
            return _cosine(min(1.0, (since - self.period) / span), self.min_ratio)
        if self.kind == "cosine_restarts":
            if step < self.warmup or since >= self.period:
                return self.envelope(step)
            # the release freezes the target at cosine progress r / (N - W), i.e. envelope(r + W)
            return since / self.period * _cosine((restart or 0) / max(1, self.total - self.warmup), self.min_ratio)
        if restart is None:
            return self.envelope(step)
        return self.envelope(step) * min(1.0, since / self.period)

    def _apply(self) -> None:
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * self.factor(group["slot"], self.last_step)

    def step(self) -> None:
        self.last_step += 1
        self._apply()

    def rewarm(self, slot: int) -> None:
        if self.enabled:
            self.restarts[slot] = self.last_step
            self._apply()

    def get_last_lr(self) -> list[float]:
        return [g["lr"] for g in self.optimizer.param_groups]
