"""Localized LoRA (spec localized_lora.md): block-structured adapters at LoRA's parameter budget.

Two registry entries, one layer (``layer.LocalizedLinear``):

* ``localized-lora``: all K x K blocks, rank r_b = r / K each -> K r_b (m + n) = r (m + n) params;
* ``localized-lora-diag``: the K diagonal blocks, rank r each -> r (m + n) params.

Both spend exactly what LoRA of rank ``r`` spends on the same targets, so ``r`` here *is* the
LoRA rank they are compared with. The fully localized structure equals peft's GraLoRA with
hybrid_r = 0 (tested); the diagonal one is not in peft, hence our own layer for both.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from methods.base import Adapted, MethodSpec, TrainContext
from methods.localized_lora.layer import LocalizedLinear
from methods.peft_tuners import ALL_LINEAR, METHODS as PEFT_METHODS

SCALINGS = ("global", "block")


@dataclass
class LocalizedLoraConfig:
    """Hyperparameters; defaults match our LoRA (r 32, alpha 64, dropout 0.05, all decoder linears).

    ``scaling``: ``global`` (default) s = alpha / r, with r the equivalent global rank (K r_b for
    the grid), so LoRA(r) and Localized(K, r/K) share one alpha and one lr grid; ``block``
    s = alpha / r_b. For the diagonal structure r_b = r and the two coincide.
    """

    r: int = 32
    num_blocks: int = 4
    alpha: float = 64.0
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: list(ALL_LINEAR))
    scaling: str = "global"

    def __post_init__(self) -> None:
        if self.scaling not in SCALINGS:
            raise ValueError(f"scaling must be one of {SCALINGS}, got {self.scaling!r}")
        if self.r < 1 or self.num_blocks < 1:
            raise ValueError(f"r and num_blocks must be >= 1, got r={self.r}, num_blocks={self.num_blocks}")


def block_rank_and_scaling(cfg: LocalizedLoraConfig, structure: str) -> tuple[int, float]:
    """Per-block rank at the LoRA(r) budget and the scaling s under ``cfg.scaling``."""
    if structure == "diagonal":
        return cfg.r, cfg.alpha / cfg.r
    if cfg.r % cfg.num_blocks:
        raise ValueError(f"localized-lora needs r divisible by num_blocks (r_b = r/K): r={cfg.r}, K={cfg.num_blocks}")
    r_b = cfg.r // cfg.num_blocks
    return r_b, cfg.alpha / (cfg.r if cfg.scaling == "global" else r_b)


def _is_target(name: str, targets: list[str]) -> bool:
    return any(name == t or name.endswith("." + t) for t in targets)


def wrap_targets(model: nn.Module, cfg: LocalizedLoraConfig, structure: str) -> dict[str, LocalizedLinear]:
    """Replace every targeted ``nn.Linear`` by a ``LocalizedLinear``; everything else is frozen."""
    r_b, scaling = block_rank_and_scaling(cfg, structure)
    for p in model.parameters():
        p.requires_grad_(False)
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear) and _is_target(n, cfg.target_modules)]
    if not found:
        raise ValueError(f"no nn.Linear matches target_modules={cfg.target_modules}")
    bad = [f"{n} ({m.out_features}x{m.in_features})" for n, m in found
           if m.out_features % cfg.num_blocks or m.in_features % cfg.num_blocks]
    if bad:
        raise ValueError(f"num_blocks K={cfg.num_blocks} must divide in and out dims of every target; "
                         f"it does not for: {', '.join(bad)}")
    wrapped = {}
    for name, base in found:
        parent_name, _, child = name.rpartition(".")
        layer = LocalizedLinear(base, structure, cfg.num_blocks, r_b, scaling, cfg.dropout)
        setattr(model.get_submodule(parent_name), child, layer)
        wrapped[name] = layer
    return wrapped


class LocalizedAdapted(Adapted):
    """Plain AdamW on the block factors; records the structure for run.json."""

    def __init__(self, model: nn.Module, layers: dict[str, LocalizedLinear], ctx: TrainContext) -> None:
        self.layers = layers
        params = [p for layer in layers.values() for p in (layer.lora_A, layer.lora_B)]
        super().__init__(model, params, ctx)

    def record(self) -> dict[str, Any]:
        one = next(iter(self.layers.values()))
        return {"structure": one.structure, "num_blocks": one.num_blocks, "block_rank": one.block_rank,
                "scaling": one.scaling, "adapted_matrices": len(self.layers)}

    def merged_model(self) -> nn.Module:
        """Fold every block adapter into its base weight and put the plain linear back in place."""
        for name, layer in self.layers.items():
            layer.merge()
            parent_name, _, child = name.rpartition(".")
            setattr(self.model.get_submodule(parent_name), child, layer.base_layer)
        return self.model


def adapt(model: nn.Module, cfg: LocalizedLoraConfig, ctx: TrainContext, structure: str) -> Adapted:
    return LocalizedAdapted(model, wrap_targets(model, cfg, structure), ctx)


# same trainer settings as LoRA: the budget-matched structures share LoRA's alpha and lr grid
_LORA_PAPER = next(s for s in PEFT_METHODS if s.name == "lora").presets["paper"]

METHODS = [
    MethodSpec("localized-lora", "Localized LoRA: K x K grid of rank r/K blocks (K=4), LoRA(r=32) budget",
               LocalizedLoraConfig, functools.partial(adapt, structure="grid"), {"paper": dict(_LORA_PAPER)},
               size_keys=("r", "num_blocks")),
    MethodSpec("localized-lora-diag", "Localized LoRA, diagonal: K=4 diagonal blocks of rank r=32, LoRA(r) budget",
               LocalizedLoraConfig, functools.partial(adapt, structure="diagonal"), {"paper": dict(_LORA_PAPER)},
               size_keys=("r", "num_blocks")),
]
