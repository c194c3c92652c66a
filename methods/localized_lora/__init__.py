"""Localized LoRA (SPEC.md beside this file): block-structured adapters at LoRA's parameter budget.

Two registry entries over one layer (``layer.LocalizedLinear``); ``config`` holds the knobs,
``model`` wraps a model's linears, ``synth`` is the paper's synthetic experiment (``bench synth``):

* ``localized-lora``: all K x K blocks, rank r_b = r / K each -> K r_b (m + n) = r (m + n) params;
* ``localized-lora-diag``: the K diagonal blocks, rank r each -> r (m + n) params.

Both spend exactly what LoRA of rank ``r`` spends on the same targets, so ``r`` here *is* the
LoRA rank they are compared with. The fully localized structure equals peft's GraLoRA with
hybrid_r = 0 (tested); the diagonal one is not in peft, hence our own layer for both.
"""
from __future__ import annotations

import functools

from methods.base import MethodSpec
from methods.localized_lora.config import LocalizedLoraConfig
from methods.localized_lora.model import adapt, targets
from methods.peft_tuners import METHODS as PEFT_METHODS

# same trainer settings as LoRA: the budget-matched structures share LoRA's alpha and lr grid
_LORA_PAPER = next(s for s in PEFT_METHODS if s.name == "lora").presets["paper"]

METHODS = [
    MethodSpec("localized-lora", "Localized LoRA: K x K grid of rank r/K blocks (K=4), LoRA(r=32) budget",
               LocalizedLoraConfig, functools.partial(adapt, structure="grid"), {"paper": dict(_LORA_PAPER)},
               size_keys=("r", "num_blocks"), check_model=functools.partial(targets, structure="grid")),
    MethodSpec("localized-lora-diag", "Localized LoRA, diagonal: K=4 diagonal blocks of rank r=32, LoRA(r) budget",
               LocalizedLoraConfig, functools.partial(adapt, structure="diagonal"), {"paper": dict(_LORA_PAPER)},
               size_keys=("r", "num_blocks"), check_model=functools.partial(targets, structure="diagonal")),
]
