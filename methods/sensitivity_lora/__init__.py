"""Sensitivity-LoRA (SPEC.md beside this file): per-matrix LoRA ranks from second-order sensitivity.

Inside ``adapt()`` (timed and memory-tracked by the driver as calibration): estimate the diagonal
Hessian of every target weight on N calibration batches, score each matrix, allocate ranks under
uniform LoRA's parameter budget, then hand a plain peft ``LoraConfig`` with ``rank_pattern`` /
``alpha_pattern`` to the shared peft path. Training is ordinary LoRA.

``config`` holds the knobs, ``sensitivity`` scores matrices, ``allocation`` turns scores into
ranks, ``model`` puts them together on a model.
"""
from __future__ import annotations

from methods.base import MethodSpec
from methods.peft_tuners import METHODS as PEFT_METHODS
from methods.sensitivity_lora.config import SensitivityLoraConfig
from methods.sensitivity_lora.model import adapt, check_targets

_LORA_PAPER = next(s for s in PEFT_METHODS if s.name == "lora").presets["paper"]

METHODS = [
    MethodSpec(
        "sensitivity-lora",
        "Sensitivity-LoRA: LoRA ranks per matrix from empirical-Fisher sensitivity, uniform LoRA(r=32) budget",
        SensitivityLoraConfig, adapt,
        presets={"paper": dict(_LORA_PAPER), "global-only": {"beta": 1.0}, "local-only": {"beta": 0.0},
                 "hutchinson": {"estimator": "hutchinson"}},
        size_keys=("r",), check_model=check_targets,
    )
]
