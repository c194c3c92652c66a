"""Localized LoRA on a model: wrap the targeted linears and train their block factors with AdamW."""
from __future__ import annotations

from typing import Any

from torch import nn

from methods.base import Adapted, MethodConfigError, TrainContext
from methods.localized_lora.config import LocalizedLoraConfig, block_rank_and_scaling
from methods.localized_lora.layer import LocalizedLinear


def _is_target(name: str, targets: list[str]) -> bool:
    return any(name == t or name.endswith("." + t) for t in targets)


def targets(model: nn.Module, cfg: LocalizedLoraConfig, structure: str) -> list[tuple[str, nn.Linear]]:
    """The linears ``cfg`` wraps in ``model``, refused (MethodConfigError) when none matches or
    K does not divide one's dims or the rank; also the pre-run check on a weightless skeleton."""
    block_rank_and_scaling(cfg, structure)
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear) and _is_target(n, cfg.target_modules)]
    if not found:
        raise MethodConfigError(f"no nn.Linear matches target_modules={cfg.target_modules}")
    bad = [f"{n} ({m.out_features}x{m.in_features})" for n, m in found
           if m.out_features % cfg.num_blocks or m.in_features % cfg.num_blocks]
    if bad:
        raise MethodConfigError(f"num_blocks K={cfg.num_blocks} must divide in and out dims of every target; "
                                f"it does not for: {', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}")
    return found


def wrap_targets(model: nn.Module, cfg: LocalizedLoraConfig, structure: str) -> dict[str, LocalizedLinear]:
    """Replace every targeted ``nn.Linear`` by a ``LocalizedLinear``; everything else is frozen."""
    found = targets(model, cfg, structure)
    r_b, scaling = block_rank_and_scaling(cfg, structure)
    for p in model.parameters():
        p.requires_grad_(False)
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
