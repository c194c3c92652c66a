"""Every method that peft already implements: LoRA, DoRA, PiSSA, AdaLoRA and ``peft:<type>``.

The hyperparameter dataclass of each method *is* peft's own config class (subclassed only to
change defaults), so ``--set lora.<field>=...`` accepts exactly the fields peft documents and
nothing is re-implemented here.
"""
from __future__ import annotations

import copy
import dataclasses
from typing import Any

from torch import nn

from methods.base import Adapted, MethodConfigError, MethodSpec, TrainContext
from methods.peft_catalogue import CAUSAL_LM_DEFAULTS, PEFT_PICKS_TARGETS, UNSUPPORTED
from methods.targets import DECODER_LINEARS as ALL_LINEAR  # lm_head is never a default target

# LLM-Adapters / DoRA commonsense settings (r 32, alpha 64, dropout 0.05) for the LoRA family
_LORA_DEFAULTS: dict[str, Any] = dict(r=32, lora_alpha=64, lora_dropout=0.05)


def _with_defaults(base: type, name: str, **defaults: Any) -> type:
    """A dataclass subclass of peft config ``base`` whose listed fields get new defaults.

    Field metadata is kept: peft reads it (e.g. LoRA variants are tagged ``is_lora_variant``).
    """
    inherited = {f.name: f for f in dataclasses.fields(base)}
    fields = []
    for key, value in defaults.items():
        meta = inherited[key].metadata
        if isinstance(value, (list, dict, set)) or dataclasses.is_dataclass(value):
            f = dataclasses.field(default_factory=lambda v=value: copy.deepcopy(v), metadata=meta)
        else:
            f = dataclasses.field(default=value, metadata=meta)
        fields.append((key, inherited[key].type, f))
    cls = dataclasses.make_dataclass(name, fields, bases=(base,))
    cls.shown_defaults = dict(defaults)  # what `bench list methods` prints
    return _refusing_in_one_line(cls)


def _refusing_in_one_line(cls: type) -> type:
    """peft's configs refuse bad values with ValueError in ``__post_init__``; ours raise
    MethodConfigError (one line at the CLI, before anything runs), as every method's config does."""
    check = cls.__post_init__

    def post_init(self: Any) -> None:
        try:
            check(self)
        except (ValueError, TypeError) as err:
            raise MethodConfigError(" ".join(str(err).split())) from None

    cls.__post_init__ = post_init
    return cls


def check_targets(model: nn.Module, cfg: Any) -> None:
    """The pre-run check on a weightless skeleton: the targets name some module, by peft's own
    matcher (peft would otherwise refuse them inside the run). ``all-linear`` and tuners that
    choose their own targets are left to peft."""
    from peft import LoraConfig
    from peft.tuners.tuners_utils import check_target_module_exists

    targets = getattr(cfg, "target_modules", None)
    if targets is None and getattr(cfg, "target_parameters", None) is None and hasattr(cfg, "target_modules"):
        targets = list(ALL_LINEAR)  # what _adapt_peft will use
    if targets is None or targets == "all-linear":
        return
    probe = LoraConfig(target_modules=targets)
    if not any(check_target_module_exists(probe, name) for name, _ in model.named_modules()):
        raise MethodConfigError(f"target_modules={targets!r} matches no module of the model")


def _peft_classes() -> tuple[Any, Any]:
    import peft

    return peft.LoraConfig, peft.AdaLoraConfig


class PeftAdapted(Adapted):
    """A peft-wrapped model; AdaLoRA's budget update runs in the uniform after_step hook."""

    def after_step(self, step: int) -> None:
        update = getattr(self.model.base_model, "update_and_allocate", None)
        if update is not None:
            update(step)  # AdaLoRA: needs this step's gradients, so before zero_grad

    def record(self) -> dict[str, Any]:
        cfg = self.model.peft_config["default"]
        rank_pattern = getattr(cfg, "rank_pattern", None)
        return {"peft_type": cfg.peft_type.value, **({"rank_pattern": rank_pattern} if rank_pattern else {})}

    def merged_model(self) -> nn.Module:
        """peft's own merge: the base model with every adapter folded in, peft wrappers removed."""
        return self.model.merge_and_unload()


def _adapt_peft(model: nn.Module, cfg: Any, ctx: TrainContext) -> Adapted:
    from peft import get_peft_model

    peft_picks = getattr(cfg, "peft_picks_targets", False)
    if not peft_picks and getattr(cfg, "target_modules", "unset") is None and getattr(cfg, "target_parameters", None) is None:
        cfg.target_modules = list(ALL_LINEAR)
    if hasattr(cfg, "adapter_layers") and cfg.adapter_layers is None:  # adaption prompt: every layer
        cfg.adapter_layers = model.config.num_hidden_layers
    if hasattr(cfg, "total_step") and cfg.total_step is None:  # AdaLoRA's schedule needs the run length
        _fit_adalora_schedule(cfg, ctx.total_steps)
    if getattr(cfg, "task_type", None) is None:
        cfg.task_type = "CAUSAL_LM"
    peft_model = get_peft_model(model, cfg)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    return PeftAdapted(peft_model, params, ctx)


def _fit_adalora_schedule(cfg: Any, total: int) -> None:
    """AdaLoRA prunes between tinit and total-tfinal; scale those to the run (10% / 30%)."""
    cfg.total_step = max(total, 2)
    if cfg.tinit == 0 and cfg.tfinal == 0:
        cfg.tinit = int(0.1 * total)
        cfg.tfinal = int(0.3 * total)
    if cfg.tinit >= cfg.total_step - cfg.tfinal:
        cfg.tinit, cfg.tfinal = 0, 0
    cfg.deltaT = max(1, min(cfg.deltaT, (cfg.total_step - cfg.tfinal - cfg.tinit) // 4 or 1))


def _deferred_total_step(cls: type) -> type:
    """AdaLoRA's config refuses total_step=None; ours leaves it unset until the run length is known."""
    check = cls.__post_init__

    def post_init(self: Any) -> None:
        deferred = self.total_step is None
        if deferred:
            self.total_step = 1
        check(self)
        if deferred:
            self.total_step = None

    cls.__post_init__ = post_init
    return cls


def _specs() -> list[MethodSpec]:
    LoraConfig, AdaLoraConfig = _peft_classes()
    lora = _with_defaults(LoraConfig, "LoraBench", **_LORA_DEFAULTS)
    dora = _with_defaults(LoraConfig, "DoraBench", **_LORA_DEFAULTS, use_dora=True)
    pissa = _with_defaults(LoraConfig, "PissaBench", **{**_LORA_DEFAULTS, "lora_dropout": 0.0}, init_lora_weights="pissa")
    adalora = _deferred_total_step(
        _with_defaults(AdaLoraConfig, "AdaLoraBench", init_r=12, target_r=8, lora_alpha=32, lora_dropout=0.05)
    )
    paper = {"paper": {"trainer.lr": 2e-4, "trainer.batch_size": 16, "trainer.max_length": 256,
                       "trainer.epochs": 3, "trainer.warmup_steps": 100}}
    return [
        MethodSpec("lora", "LoRA (peft), r=32 alpha=64 on all decoder linears", lora, _adapt_peft, paper,
                   size_keys=("r",), check_model=check_targets, shardable=True),
        MethodSpec("dora", "DoRA (peft LoRA with use_dora), r=32 alpha=64", dora, _adapt_peft,
                   {"paper": {**paper["paper"], "trainer.lr": 1e-4}}, size_keys=("r",), check_model=check_targets),
        MethodSpec("pissa", "PiSSA (peft LoRA, SVD init of the principal subspace), r=32", pissa, _adapt_peft, paper,
                   size_keys=("r",), check_model=check_targets),
        MethodSpec("adalora", "AdaLoRA (peft), init_r=12 -> target_r=8, budget schedule scaled to the run",
                   adalora, _adapt_peft, paper, size_keys=("init_r", "target_r"), check_model=check_targets),
    ]


def causal_lm_config_class(key: str) -> type:
    """peft's config class for tuner ``key`` with the causal LM defaults of ``peft_catalogue``."""
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    base = PEFT_TYPE_TO_CONFIG_MAPPING[key]
    cls = _with_defaults(base, f"{base.__name__}Bench", **CAUSAL_LM_DEFAULTS.get(key, {}))
    cls.peft_picks_targets = key in PEFT_PICKS_TARGETS
    if any(f.name == "total_step" for f in dataclasses.fields(cls)):
        cls = _deferred_total_step(cls)
    return cls


def generic_peft_spec(peft_type: str) -> MethodSpec:
    """``peft:<type>``: any peft tuner, built from its config class with ``--set`` values."""
    from peft import PeftType
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    key = peft_type.upper()
    if key not in PEFT_TYPE_TO_CONFIG_MAPPING:
        valid = sorted(t.lower() for t in PEFT_TYPE_TO_CONFIG_MAPPING if t not in UNSUPPORTED)
        raise LookupError(f"unknown method 'peft:{peft_type}': peft has no tuner {peft_type!r}; "
                            f"valid peft:<type>: {', '.join(valid)}")
    if key in UNSUPPORTED:
        raise LookupError(f"method 'peft:{peft_type.lower()}' cannot run in this harness: {UNSUPPORTED[key][0]}")
    cls = causal_lm_config_class(key)
    changed = " with causal LM defaults" if key in CAUSAL_LM_DEFAULTS else ""
    targets = "peft's own targets" if key in PEFT_PICKS_TARGETS else "targets default to all decoder linears"
    doc = f"peft {PeftType(key).value} tuner with peft's defaults{changed} ({targets})"
    sizes = tuple(k for k in ("r", "rank") if k in {f.name for f in dataclasses.fields(cls)})
    return MethodSpec(f"peft:{peft_type.lower()}", doc, cls, _adapt_peft, size_keys=sizes, check_model=check_targets)


METHODS = _specs()
