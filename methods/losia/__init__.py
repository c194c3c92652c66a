"""LoSiA (subnet localization and optimization) and LoSiA-Pro (its block-gradient backward).

Both train a dense block W[R, C] of every decoder linear and re-select it periodically from
gradient importance (methods/losia/SPEC.md). They differ only in cost: LoSiA lets autograd
compute full weight gradients and slices them; LoSiA-Pro computes only the block's gradient.

Conventions (SPEC.md, "Spec and release"): importance uses the weight before the step's update.
``compat=spec`` (default) trains by the spec: AdamW with the trainer's eps on the bias-corrected
sqrt(v), decoupled decay before the update, state dropped at a re-selection, the trainer's
clipping, and ``schedule=spec`` (warm-up (s+1)/W, re-warm from 0 over T steps to the envelope).
``compat=release`` is the authors' release exactly: block eps 1e-6 on the uncorrected sqrt(v),
block decay after the update, dense rest as torch Adam (eps 1e-8, coupled L2), moments zeroed but
the step count kept, no clipping, and ``schedule=cosine_restarts``; ``schedule=cosine`` is the
release's other rule. ``--preset paper`` sets ``compat=release``.
"""
from __future__ import annotations

from torch import nn

from methods.base import MethodSpec, TrainContext
from methods.losia.config import LosiaConfig
from methods.losia.model import LosiaAdapted, adapt_losia, check_on_model


def adapt(model: nn.Module, cfg: LosiaConfig, ctx: TrainContext) -> LosiaAdapted:
    return adapt_losia(model, cfg, ctx, efficient=False)


def adapt_pro(model: nn.Module, cfg: LosiaConfig, ctx: TrainContext) -> LosiaAdapted:
    return adapt_losia(model, cfg, ctx, efficient=True)


# the release's commonsense scripts (one model per task; BoolQ used lr 2e-4), trained as they ran
# (their grad_clip 1.0 had no effect there, and compat=release does not clip)
_PAPER = {
    "rank_factor": 0.125,
    "period": 50,
    "trainer.lr": 5e-5,
    "trainer.batch_size": 16,
    "trainer.max_length": 256,
    "trainer.epochs": 3,
    "trainer.warmup_ratio": 0.1,
    "trainer.grad_clip": 1.0,
    "compat": "release",
}

_CONVENTIONS = ("; importance on the pre-update weight; compat=spec (default): AdamW, trainer eps on "
                "bias-corrected sqrt(v), decay before the update, state dropped at re-selection, clipping, "
                "schedule=spec (warm-up (s+1)/W, re-warm from 0 over T to the envelope); compat=release: the "
                "authors' release (block eps 1e-6 on uncorrected sqrt(v), decay after the update, dense rest "
                "torch Adam with L2, moments zeroed but step kept, no clipping, schedule=cosine_restarts; "
                "schedule=cosine also offered); init_subnets=PATH (JSON {weight: [rows, cols]}); writes "
                "subnets.jsonl; see methods/losia/SPEC.md")

METHODS = [
    MethodSpec("losia", "LoSiA: train a p x p subnet block of every decoder linear, re-localized by importance "
               "(full weight gradients, sliced)" + _CONVENTIONS, LosiaConfig, adapt, presets={"paper": dict(_PAPER)},
               size_keys=("rank_factor",), check_model=check_on_model),
    MethodSpec("losia-pro", "LoSiA-Pro: LoSiA with a backward that computes only the subnet block's gradient"
               + _CONVENTIONS, LosiaConfig, adapt_pro, presets={"paper": dict(_PAPER)}, size_keys=("rank_factor",),
               check_model=check_on_model),
]
