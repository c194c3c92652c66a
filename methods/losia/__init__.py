"""LoSiA (subnet localization and optimization) and LoSiA-Pro (its block-gradient backward).

Both train a dense block W[R, C] of every decoder linear and re-select it periodically from
gradient importance (shared/specs/losia.md). They differ only in cost: LoSiA lets autograd
compute full weight gradients and slices them; LoSiA-Pro computes only the block's gradient.
"""
from __future__ import annotations

from torch import nn

from methods.base import MethodSpec, TrainContext
from methods.losia.config import LosiaConfig
from methods.losia.model import LosiaAdapted, adapt_losia


def adapt(model: nn.Module, cfg: LosiaConfig, ctx: TrainContext) -> LosiaAdapted:
    return adapt_losia(model, cfg, ctx, efficient=False)


def adapt_pro(model: nn.Module, cfg: LosiaConfig, ctx: TrainContext) -> LosiaAdapted:
    return adapt_losia(model, cfg, ctx, efficient=True)


# the release's commonsense scripts (one model per task; BoolQ used lr 2e-4)
_PAPER = {
    "rank_factor": 0.125,
    "period": 50,
    "trainer.lr": 5e-5,
    "trainer.batch_size": 16,
    "trainer.max_length": 256,
    "trainer.epochs": 3,
    "trainer.warmup_ratio": 0.1,
    "trainer.grad_clip": 1.0,
}

METHODS = [
    MethodSpec("losia", "LoSiA: train a p x p subnet block of every decoder linear, re-localized by importance "
               "(full weight gradients, sliced)", LosiaConfig, adapt, presets={"paper": dict(_PAPER)}, size_keys=("rank_factor",)),
    MethodSpec("losia-pro", "LoSiA-Pro: LoSiA with a backward that computes only the subnet block's gradient",
               LosiaConfig, adapt_pro, presets={"paper": dict(_PAPER)}, size_keys=("rank_factor",)),
]
