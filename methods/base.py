"""The contract between the uniform driver and every fine-tuning method.

The driver (harness/trainer.py) never imports a concrete method. It asks the registry for a
``MethodSpec``, calls ``spec.adapt(model, config, ctx)`` once, and from then on talks only to
the returned ``Adapted`` object: it runs forward/backward itself, then calls the hooks below in
a fixed order every optimizer step::

    adapted.before_step(step)              # e.g. LoSiA switches a layer into profiling
    loss.backward()                        # (per micro-batch, by the driver)
    adapted.sync_tensors()                 # several processes: what the driver averages across ranks
    adapted.clip_gradients(max_norm)       # default: clip_grad_norm_ over trainable params
    adapted.optimizer.step(); adapted.scheduler.step()
    adapted.after_step(step)               # e.g. AdaLoRA rank update, LoSiA re-localization
    adapted.zero_grad()

Everything a method does differently from "AdamW on some parameters with warm-up + cosine"
lives behind these hooks, so adding a method is one module plus one registry line.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Protocol

import torch
from torch import nn
from torch.distributed.tensor import DTensor


class Artifacts(Protocol):
    """A method's own files in its run folder (``harness.runfolder.MethodFiles``)."""

    def append(self, name: str, lines: Iterable[str]) -> None:
        """Append text lines to the file ``name``; its first append in a run replaces an earlier run's."""


@dataclass(frozen=True)
class TrainContext:
    """What a method may know about the training run it is being prepared for.

    ``calibration_batches`` yields training batches (dicts for ``model(**batch)`` with
    ``labels``) for methods that look at data before training (Sensitivity-LoRA, PiSSA-style
    inits); it is a fresh, seeded iterator on every call and never touches evaluation items.

    ``artifacts`` is where a method writes its own files into the run folder (``Artifacts``;
    None when there is no run folder, e.g. ``bench perf`` or a plain Python call). The run folder
    owns them: a rerun starts each file fresh, so no method opens files there itself.
    """

    lr: float = 2e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup_steps: int = 0
    total_steps: int = 1
    min_lr_ratio: float = 0.0
    grad_clip: float | None = 1.0
    seed: int = 0
    device: str = "cpu"
    calibration_batches: Callable[[], Iterator[dict[str, torch.Tensor]]] | None = None
    artifacts: Artifacts | None = None


class MethodConfigError(ValueError):
    """Bad input to a method (a knob's value, a file a knob names): the CLI prints it as one line.

    Methods never import the harness, so this is the error type they raise for user mistakes.
    """


def warmup_cosine(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """LR multiplier: linear warm-up from 0 over ``warmup`` steps, then cosine to ``min_ratio``.

    ``step`` is the index of the optimizer step about to be taken (0-based), so the very first
    update of a run with warm-up uses lr * 1/warmup, never exactly 0.
    """
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def default_optimizer(params: Iterable[nn.Parameter], ctx: TrainContext) -> torch.optim.Optimizer:
    """AdamW as every baseline uses it; methods with their own update rule build their own."""
    params = [p for p in params if p.requires_grad]
    kwargs: dict[str, Any] = dict(lr=ctx.lr, weight_decay=ctx.weight_decay, betas=ctx.betas, eps=ctx.eps)
    if ctx.device.startswith("cuda"):
        kwargs["fused"] = True
    else:
        kwargs["foreach"] = True
    return torch.optim.AdamW(params, **kwargs)


def default_scheduler(optimizer: torch.optim.Optimizer, ctx: TrainContext) -> torch.optim.lr_scheduler.LRScheduler:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, ctx.warmup_steps, ctx.total_steps, ctx.min_lr_ratio)
    )


def local_part(t: torch.Tensor) -> torch.Tensor:
    """What this process holds of ``t``: its shard of a sharded tensor (a DTensor, ``--shard``), else
    ``t`` itself."""
    return t.to_local() if isinstance(t, DTensor) else t


def tensor_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of distinct storages among ``tensors`` (views of one storage count once; of a sharded
    tensor, this process's shard)."""
    seen: set[tuple[torch.device, int]] = set()
    total = 0
    for t in tensors:
        if t is None or not isinstance(t, torch.Tensor):
            continue
        t = local_part(t)
        st = t.untyped_storage()
        key = (t.device, st.data_ptr())
        if key in seen:
            continue
        seen.add(key)
        total += st.nbytes()
    return total


class Adapted:
    """A model prepared by a method, plus the optimizer and hooks the driver will drive.

    Subclass it to change any hook; the defaults describe plain "train these parameters with
    AdamW" methods (full fine-tuning, every peft tuner).
    """

    def __init__(
        self,
        model: nn.Module,
        params: list[nn.Parameter],
        ctx: TrainContext,
        optimizer: torch.optim.Optimizer | None = None,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    ) -> None:
        self.model = model
        self.params = params
        self.ctx = ctx
        self.optimizer = optimizer or default_optimizer(params, ctx)
        self.scheduler = scheduler or default_scheduler(self.optimizer, ctx)

    # -- per-step hooks -------------------------------------------------------------------
    def before_step(self, step: int) -> None:
        """Called before the forward pass(es) of optimizer step ``step``."""

    def clip_gradients(self, max_norm: float | None) -> float | None:
        """Clip and return the pre-clip global gradient norm (None when clipping is off)."""
        if not max_norm:
            return None
        grads = [p for p in self.params if p.grad is not None]
        return float(torch.nn.utils.clip_grad_norm_(grads, max_norm)) if grads else 0.0

    def sync_tensors(self) -> list[torch.Tensor]:
        """The gradients a data-parallel run averages across ranks after the backward, before
        clipping (in place; ``harness.distributed.team``): every trainable gradient by default.
        Methods that train part of a tensor return only what their optimizer (and any statistic
        they keep) reads, so that the traffic is what they train."""
        return [p.grad for p in self.params if p.grad is not None]

    def after_step(self, step: int) -> None:
        """Called after optimizer.step() and scheduler.step(), before gradients are cleared."""

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def current_lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def start_stage(self, ctx: TrainContext) -> None:
        """Continued training (``--sequence``): a new task begins with run context ``ctx``.

        Default policy: weights and adapters carry over; the optimizer state and the LR schedule
        start afresh (warm-up + cosine over the new stage). Methods with more state override it.
        """
        self.ctx = ctx
        self.optimizer = default_optimizer(self.params, ctx)
        self.scheduler = default_scheduler(self.optimizer, ctx)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue training later (stage checkpoints of ``--sequence``).

        The model's own state covers weights and adapters; methods holding state outside
        module buffers (e.g. LoSiA's row/column indices) add it here.
        """
        return {"model": self.model.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])

    # -- accounting (harness/MEASUREMENT.md, "Memory") ---------------------------------------------
    def trainable_params(self) -> int:
        """Number of parameters the method actually updates."""
        return sum(p.numel() for p in self.params)

    def grad_bytes(self) -> int:
        """Bytes of gradient buffers the method holds right now (call after a backward)."""
        return tensor_bytes(p.grad for p in self.model.parameters() if p.grad is not None)

    def optimizer_state_bytes(self) -> int:
        return tensor_bytes(
            v for state in self.optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor)
        )

    def extra_state_bytes(self) -> int:
        """Method-specific buffers beyond gradients and optimizer state (e.g. importance)."""
        return 0

    def record(self) -> dict[str, Any]:
        """Method-specific facts to store in run.json (allocated ranks, re-selection log, ...)."""
        return {}

    def for_eval(self) -> nn.Module:
        """The module to evaluate (the adapted model itself for every method so far)."""
        return self.model

    def merged_model(self) -> nn.Module:
        """The trained model as a plain transformers model, with any adapter folded into the base
        weights: what ``--save merged`` writes and what a saved weight delta is computed from.

        The default suits methods that train the base weights in place (full, GaLore, LoSiA):
        their model already is that. Adapter methods merge, possibly in place, so the harness
        calls this once, after the last evaluation.
        """
        return self.model


AdaptFn = Callable[[nn.Module, Any, TrainContext], Adapted]
CheckFn = Callable[[nn.Module, Any], None]


@dataclass(frozen=True)
class MethodSpec:
    """One registry entry: a name, its hyperparameter dataclass and its ``adapt`` function.

    ``presets`` maps a preset name (e.g. ``"paper"``) to overrides, with keys either of the
    method's config (``"r": 16``) or of the trainer (``"trainer.lr": 5e-5``).
    """

    name: str
    description: str
    config_cls: type
    adapt: AdaptFn
    presets: dict[str, dict[str, Any]] = field(default_factory=dict)
    # an optional package the method imports: (module, peft-bench extra that installs it)
    requires: tuple[str, str] | None = None
    # config keys that set how much the method trains (LoRA's r, LoSiA's rank_factor): columns of
    # results.csv, so a table groups by them without reading every run.json
    size_keys: tuple[str, ...] = ()
    # checks a config against the model's modules and shapes before anything runs (the harness
    # passes a weightless skeleton on the meta device); raises MethodConfigError with one line
    check_model: CheckFn | None = None
    # --shard may put it under FSDP2 (harness.distributed.shard): its trainable tensors are
    # parameters of the model trained by the default AdamW (Adapted.start_stage rebuilds it)
    shardable: bool = False

    def default_config(self) -> Any:
        return self.config_cls()

    def config_keys(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self.config_cls)]
