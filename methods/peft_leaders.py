"""The high-rank and sparse leaders of peft's MetaMathQA comparison, as named baselines.

Each default is the adapter config of peft's own comparison run
(``method_comparison/MetaMathQA/experiments/<method>/llama-3.2-3B-*/adapter_config.json`` in
huggingface/peft): targets ``q_proj``/``v_proj`` (peft's default mapping for Llama, which those
configs use), and the preset ``peft-comparison`` is that run's training settings
(``default_training_params.json`` plus the experiment's ``training_params.json``). The README's
methods table says which experiment each default comes from.
"""
from __future__ import annotations

import warnings
from typing import Any, Callable

import torch
from torch import nn

from methods.base import Adapted, MethodConfigError, MethodSpec, TrainContext
from methods.peft_tuners import PeftAdapted, _adapt_peft, _with_defaults

QV = ["q_proj", "v_proj"]  # peft's default targets for Llama: what the comparison configs resolve to

# peft's default_training_params.json (Llama-3.2-3B on MetaMathQA): AdamW, cosine, clip 1.0
_COMPARISON = {"trainer.lr": 1e-4, "trainer.weight_decay": 0.1, "trainer.batch_size": 4,
               "trainer.max_length": 768, "trainer.max_steps": 5000, "trainer.grad_clip": 1.0}


def _comparison(**trainer: float) -> dict[str, dict[str, Any]]:
    """The ``peft-comparison`` preset with one experiment's own training_params.json on top."""
    return {"peft-comparison": {**_COMPARISON, **{f"trainer.{k}": v for k, v in trainer.items()}}}


def _positive(cfg: Any, *keys: str) -> None:
    for key in keys:
        value = getattr(cfg, key)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
            raise MethodConfigError(f"{key} must be a positive number, got {value!r}")


def _targets(model: nn.Module, cfg: Any) -> list[tuple[str, nn.Linear]]:
    names = set(cfg.target_modules or [])
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear) and n.rsplit(".", 1)[-1] in names]


class ShiraAdapted(PeftAdapted):
    """SHiRA with the rank it was actually built with recorded (see ``_adapt_shira``)."""

    fitted: dict[str, Any]  # {"r_requested", "r_used"} when r was lowered, else empty

    def record(self) -> dict[str, Any]:
        return {**super().record(), **self.fitted}


def _adapt_shira(model: nn.Module, cfg: Any, ctx: TrainContext) -> Adapted:
    """peft's SHiRA trains r * (d_in + d_out) entries per layer and refuses a layer smaller than that.

    On a model narrower than any real LLM (tiny-llama's 64 x 32 v_proj holds 2048 weights, r=32
    asks for 3072) r is lowered to the largest value every targeted layer allows, with a warning,
    and both values are recorded in run.json; on SmolLM2 and larger nothing changes.
    """
    layers = _targets(model, cfg)
    largest = min((m.in_features * m.out_features // (m.in_features + m.out_features) for _, m in layers),
                  default=cfg.r)
    fitted: dict[str, Any] = {}
    if cfg.r > largest:
        warnings.warn(f"shira: r={cfg.r} exceeds the smallest targeted layer; using r={largest}", stacklevel=2)
        fitted = {"r_requested": cfg.r, "r_used": largest}
        cfg.r = largest
    adapted = _adapt_peft(model, cfg, ctx)
    shira = ShiraAdapted(adapted.model, adapted.params, ctx, adapted.optimizer, adapted.scheduler)
    shira.fitted = fitted
    return shira


class KasaAdapted(PeftAdapted):
    """KaSA's two regularizers (paper Eq. 9-10, peft's ``_get_kasa_loss``) join the task loss's
    gradients here, once per optimizer step, before clipping; the logged loss is the task loss."""

    def clip_gradients(self, max_norm: float | None) -> float | None:
        regularizer = self.model.base_model._get_kasa_loss()
        if isinstance(regularizer, torch.Tensor):  # a float 0.0 when no layer uses KaSA
            regularizer.backward()
        return super().clip_gradients(max_norm)


def _check_kasa(model: nn.Module, cfg: Any) -> None:
    """KaSA discards the r smallest singular values of each targeted weight: r < min(d_in, d_out)."""
    _positive(cfg, "r", "lora_alpha")
    for name, layer in _targets(model, cfg):
        if cfg.r >= min(layer.in_features, layer.out_features):
            raise MethodConfigError(f"kasa: r={cfg.r} must be below min(d_in, d_out) = "
                                    f"{min(layer.in_features, layer.out_features)} of {name}")


def _adapt_kasa(model: nn.Module, cfg: Any, ctx: TrainContext) -> Adapted:
    adapted = _adapt_peft(model, cfg, ctx)
    return KasaAdapted(adapted.model, adapted.params, ctx, adapted.optimizer, adapted.scheduler)


def _checked(*keys: str) -> Callable[[nn.Module, Any], None]:
    """A ``check_model`` (run at planning, before anything trains): the keys are positive numbers."""
    def check(model: nn.Module, cfg: Any) -> None:
        _positive(cfg, *keys)

    return check


def _check_sparsity(model: nn.Module, cfg: Any) -> None:
    if not isinstance(cfg.sparsity, (int, float)) or not 0 < cfg.sparsity < 1:
        raise MethodConfigError(f"sparsity must lie strictly between 0 and 1, got {cfg.sparsity!r}")


def _specs() -> list[MethodSpec]:
    import peft
    from peft.tuners.lora.config import KasaConfig

    hira = _with_defaults(peft.HiraConfig, "HiraBench", r=32, target_modules=QV)
    shira = _with_defaults(peft.ShiraConfig, "ShiraBench", r=32, mask_type="random", random_seed=42, target_modules=QV)
    miss = _with_defaults(peft.MissConfig, "MissBench", r=64, mini_r=1, target_modules=QV)
    rslora = _with_defaults(peft.LoraConfig, "RsLoraBench", r=64, lora_alpha=64, lora_dropout=0.0, use_rslora=True,
                            target_modules=QV)
    vera = _with_defaults(peft.VeraConfig, "VeraBench", r=256, d_initial=0.1, target_modules=QV)
    supertuning = _with_defaults(peft.SupertuningConfig, "SuperTuningBench", sparsity=0.974, select_top=True,
                                 target_modules=QV)
    kasa = _with_defaults(peft.LoraConfig, "KasaBench", r=32, lora_alpha=64, lora_dropout=0.0, target_modules=QV,
                          kasa_config=KasaConfig(beta=1e-4, gamma=1e-3))
    supra = {**_comparison()["peft-comparison"], "sparsity": 0.99, "r": 32, "lora_alpha": 64.0}
    return [
        MethodSpec("hira", "HiRA (peft): Hadamard high-rank update, r=32 on q/v (peft comparison)", hira,
                   _adapt_peft, _comparison(lr=4.5e-3, weight_decay=0.0), size_keys=("r",), check_model=_checked("r")),
        MethodSpec("shira", "SHiRA (peft): sparse high-rank, r*(d_in+d_out) random entries per layer, r=32 on q/v "
                   "(peft comparison)", shira, _adapt_shira, _comparison(lr=3e-4), size_keys=("r",),
                   check_model=_checked("r")),
        MethodSpec("miss", "MiSS (peft): matrix shard sharing, r=64 mini_r=1 on q/v (peft comparison)", miss,
                   _adapt_peft, _comparison(), size_keys=("r",), check_model=_checked("r", "mini_r")),
        MethodSpec("rslora", "rsLoRA (peft LoRA, use_rslora): r=64 alpha=64, scaling alpha/sqrt(r), on q/v "
                   "(peft comparison)", rslora, _adapt_peft, _comparison(), size_keys=("r",),
                   check_model=_checked("r", "lora_alpha")),
        MethodSpec("vera", "VeRA (peft): shared random projections, r=256, trained scaling vectors, on q/v "
                   "(peft comparison)", vera, _adapt_peft, _comparison(lr=1e-3), size_keys=("r",), check_model=_checked("r")),
        MethodSpec("supertuning", "Super-Tuning (peft): 97.4% sparse top-k weight update on q/v (peft comparison)",
                   supertuning, _adapt_peft, {**_comparison(), "supra": supra},
                   size_keys=("sparsity",), check_model=_check_sparsity),
        MethodSpec("kasa", "KaSA (peft LoRA with kasa_config): SVD-truncated base + singular-value adapter, r=32 "
                   "alpha=64 on q/v (peft comparison), plus the paper's regularizers (peft's run omits them)", kasa,
                   _adapt_kasa, _comparison(), size_keys=("r",), check_model=_check_kasa),
    ]


METHODS = _specs()
