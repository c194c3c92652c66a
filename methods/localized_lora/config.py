"""Localized LoRA's hyperparameters and the block rank / scaling they imply (SPEC.md, "Parametrization")."""
from __future__ import annotations

from dataclasses import dataclass, field

from methods.base import MethodConfigError
from methods.targets import DECODER_LINEARS

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
    target_modules: list[str] = field(default_factory=lambda: list(DECODER_LINEARS))
    scaling: str = "global"

    def __post_init__(self) -> None:
        if self.scaling not in SCALINGS:
            raise MethodConfigError(f"scaling must be one of {', '.join(SCALINGS)}, got {self.scaling!r}")
        if self.r < 1 or self.num_blocks < 1:
            raise MethodConfigError(f"r and num_blocks must be >= 1, got r={self.r}, num_blocks={self.num_blocks}")


def block_rank_and_scaling(cfg: LocalizedLoraConfig, structure: str) -> tuple[int, float]:
    """Per-block rank at the LoRA(r) budget and the scaling s under ``cfg.scaling``."""
    if structure == "diagonal":
        return cfg.r, cfg.alpha / cfg.r
    if cfg.r % cfg.num_blocks:
        raise MethodConfigError(f"localized-lora needs r divisible by num_blocks (r_b = r/K): r={cfg.r}, K={cfg.num_blocks}")
    r_b = cfg.r // cfg.num_blocks
    return r_b, cfg.alpha / (cfg.r if cfg.scaling == "global" else r_b)
