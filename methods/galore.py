"""GaLore: every weight trains, but Adam's moments of the decoder linears live in a low-rank
projection of their gradients (galore-torch's ``GaLoreAdamW``), refreshed by SVD every
``update_proj_gap`` steps. Embeddings, norms and lm_head form a plain AdamW group.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from methods.base import Adapted, MethodConfigError, MethodSpec, TrainContext, tensor_bytes
from methods.targets import DECODER_LINEARS as ALL_LINEAR

PROJ_TYPES = ("std", "reverse_std", "right", "left", "full")


@dataclass
class GaloreConfig:
    """GaLore's knobs; defaults are the paper's LLaMA pre-training settings (rank 128, T 200, alpha 0.25).

    rank: rank of the gradient projection of each target weight.
    update_proj_gap: optimizer steps between recomputing the projection (an SVD of the gradient).
    scale: alpha, the factor on the projected-back update.
    proj_type: galore-torch's projection side: ``std`` projects the smaller side; also
        ``reverse_std``, ``right``, ``left``, ``full``.
    target_modules: name suffixes of the nn.Linear layers whose weights are projected.
    """

    rank: int = 128
    update_proj_gap: int = 200
    scale: float = 0.25
    proj_type: str = "std"
    target_modules: list[str] = field(default_factory=lambda: list(ALL_LINEAR))

    def __post_init__(self) -> None:
        if self.rank < 1 or self.update_proj_gap < 1:
            raise MethodConfigError(f"rank and update_proj_gap must be >= 1, got rank={self.rank}, "
                                    f"update_proj_gap={self.update_proj_gap}")
        if self.proj_type not in PROJ_TYPES:
            raise MethodConfigError(f"proj_type must be one of {', '.join(PROJ_TYPES)}, got {self.proj_type!r}")


class GaloreAdapted(Adapted):
    """Counts the projection matrices, which live in the optimizer state beside the moments."""

    def __init__(self, model: nn.Module, params: list[nn.Parameter], ctx: TrainContext, optimizer: Any,
                 cfg: GaloreConfig, n_projected: int) -> None:
        super().__init__(model, params, ctx, optimizer)
        self.cfg = cfg
        self.n_projected = n_projected

    def optimizer_state_bytes(self) -> int:
        tensors = []
        for state in self.optimizer.state.values():
            for value in state.values():
                ortho = getattr(value, "ortho_matrix", value)  # GaLoreProjector keeps its basis here
                tensors.extend(ortho if isinstance(ortho, (list, tuple)) else [ortho])
        return tensor_bytes(tensors)

    def record(self) -> dict[str, Any]:
        cfg = self.cfg
        return {"rank": cfg.rank, "update_proj_gap": cfg.update_proj_gap, "scale": cfg.scale,
                "proj_type": cfg.proj_type, "projected_weights": self.n_projected}


def projected_weights(model: nn.Module, cfg: GaloreConfig) -> list[nn.Parameter]:
    """The weights GaLore projects: of every nn.Linear named one of ``target_modules``
    (also the pre-run check on a weightless skeleton)."""
    projected = [
        m.weight for name, m in model.named_modules()
        if isinstance(m, nn.Linear) and name.rsplit(".", 1)[-1] in cfg.target_modules
    ]
    if not projected:
        raise MethodConfigError(f"target_modules: no nn.Linear named any of {list(cfg.target_modules)} in the model")
    return projected


def adapt(model: nn.Module, cfg: GaloreConfig, ctx: TrainContext) -> GaloreAdapted:
    from galore_torch import GaLoreAdamW  # the registry checked it is installed (extra "galore")

    projected = projected_weights(model, cfg)
    for p in model.parameters():
        p.requires_grad_(True)
    projected_ids = {id(p) for p in projected}
    rest = [p for p in model.parameters() if id(p) not in projected_ids]
    groups = [
        {"params": rest},
        {"params": projected, "rank": cfg.rank, "update_proj_gap": cfg.update_proj_gap,
         "scale": cfg.scale, "proj_type": cfg.proj_type},
    ]
    optimizer = GaLoreAdamW(groups, lr=ctx.lr, betas=ctx.betas, eps=ctx.eps, weight_decay=ctx.weight_decay,
                            no_deprecation_warning=True)
    return GaloreAdapted(model, list(model.parameters()), ctx, optimizer, cfg, len(projected))


METHODS = [
    MethodSpec("galore", "GaLore (galore-torch): full-parameter AdamW with low-rank projected moments "
               "on all decoder linears", GaloreConfig, adapt, requires=("galore_torch", "galore"),
               size_keys=("rank",), check_model=projected_weights),
]
