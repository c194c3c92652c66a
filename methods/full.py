"""Full fine-tuning: every parameter trained with AdamW (the reference point for cost)."""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from methods.base import Adapted, MethodSpec, TrainContext


@dataclass
class FullConfig:
    """Full fine-tuning has no method hyperparameters; lr etc. are the trainer's."""


def adapt(model: nn.Module, cfg: FullConfig, ctx: TrainContext) -> Adapted:
    for p in model.parameters():
        p.requires_grad_(True)
    # tied weights (embedding == lm_head) appear once in parameters(), so nothing is counted twice
    return Adapted(model, list(model.parameters()), ctx)


METHODS = [
    MethodSpec(
        "full",
        "full fine-tuning: all weights, AdamW",
        FullConfig,
        adapt,
        presets={"paper": {"trainer.lr": 2e-5}},
        shardable=True,
    )
]
