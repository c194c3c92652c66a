"""Sensitivity-LoRA on a model: score the targets, allocate ranks, hand peft a LoRA config.

There is no layer of our own: training is peft's LoRA with a ``rank_pattern``.
"""
from __future__ import annotations

import itertools
import re
from typing import Any

from torch import nn

from methods.base import Adapted, MethodConfigError, TrainContext
from methods.peft_tuners import PeftAdapted, _adapt_peft
from methods.sensitivity_lora.allocation import allocate
from methods.sensitivity_lora.config import SensitivityLoraConfig
from methods.sensitivity_lora.sensitivity import combine, diag_hessian, local_sensitivity


def find_targets(model: nn.Module, target_modules: list[str]) -> dict[str, nn.Linear]:
    """The nn.Linear modules peft's own matcher would adapt for ``target_modules``."""
    from peft import LoraConfig
    from peft.tuners.tuners_utils import check_target_module_exists

    probe = LoraConfig(target_modules=target_modules)
    found = {n: m for n, m in model.named_modules()
             if isinstance(m, nn.Linear) and check_target_module_exists(probe, n)}
    if not found:
        raise MethodConfigError(f"no nn.Linear matches target_modules={target_modules}")
    return found


def check_targets(model: nn.Module, cfg: SensitivityLoraConfig) -> None:
    """The pre-run check on a weightless skeleton: ``target_modules`` names some linear."""
    find_targets(model, cfg.target_modules)


def sensitivities(model: nn.Module, targets: dict[str, nn.Linear], cfg: SensitivityLoraConfig,
                  ctx: TrainContext) -> dict[str, dict[str, float]]:
    """Global, local and combined sensitivity per target from ``cfg.calibration_batches`` batches.

    Only the target weights require grad meanwhile (nothing else is differentiated); flags and
    train/eval mode are restored, and the Hessian buffers are dropped before returning.
    """
    flags = [(p, p.requires_grad) for p in model.parameters()]
    was_training = model.training
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        weights = {n: m.weight.requires_grad_(True) for n, m in targets.items()}
        model.eval()
        batches = itertools.islice(ctx.calibration_batches(), cfg.calibration_batches)
        h = diag_hessian(model, weights, batches, cfg.estimator, ctx.seed)
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)
    g = {n: float(h[n].sum()) for n in targets}
    loc = {n: local_sensitivity(h.pop(n), cfg.local_metric, cfg.topk_fraction) for n in targets}
    score = combine(g, loc, cfg.beta)
    return {n: {"global": g[n], "local": loc[n], "score": score[n]} for n in targets}


def lora_config(cfg: SensitivityLoraConfig, ranks: dict[str, int]) -> Any:
    """peft LoraConfig adapting only rank > 0 matrices, alpha_w / r_w = lora_alpha / r everywhere."""
    from peft import LoraConfig

    kept = [n for n, r in ranks.items() if r > 0]
    return LoraConfig(
        r=cfg.r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, target_modules=kept,
        rank_pattern={re.escape(n): ranks[n] for n in kept},
        alpha_pattern={re.escape(n): ranks[n] * cfg.lora_alpha / cfg.r for n in kept},
        task_type="CAUSAL_LM",
    )


class SensitivityAdapted(PeftAdapted):
    """Plain peft LoRA training; ``record()`` adds the allocation and the sensitivities."""

    def __init__(self, base: PeftAdapted, facts: dict[str, Any]) -> None:
        super().__init__(base.model, base.params, base.ctx, base.optimizer, base.scheduler)
        self.facts = facts

    def record(self) -> dict[str, Any]:
        return {"peft_type": super().record()["peft_type"], **self.facts}


def adapt(model: nn.Module, cfg: SensitivityLoraConfig, ctx: TrainContext) -> Adapted:
    targets = find_targets(model, cfg.target_modules)
    shapes = {n: (m.out_features, m.in_features) for n, m in targets.items()}
    if ctx.calibration_batches is None:
        raise ValueError("sensitivity-lora needs calibration batches (TrainContext.calibration_batches)")
    sens = sensitivities(model, targets, cfg, ctx)
    ranks = allocate({n: s["score"] for n, s in sens.items()}, shapes, cfg.r, cfg.r_min, cfg.r_max)
    facts = {
        "calibration": f"{cfg.estimator}, {cfg.calibration_batches} batches",
        "budget_params": cfg.r * sum(sum(s) for s in shapes.values()),
        "allocated_params": sum(ranks[n] * sum(shapes[n]) for n in targets),
        "ranks": ranks,
        "excluded": [n for n, r in ranks.items() if r == 0],
        "sensitivity": sens,
    }
    return SensitivityAdapted(_adapt_peft(model, lora_config(cfg, ranks), ctx), facts)
