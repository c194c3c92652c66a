"""The training loop, method-agnostic: everything a method does differently is behind ``Adapted``.

Timing covers exactly one optimizer step: the method's pre-step hook, forward and backward of
every micro-batch, clipping, the optimizer and scheduler, and the method's post-step hook. One
step (the last timing warm-up step) additionally runs the activation and FLOP profilers and is
therefore excluded from the step-time statistics (harness/MEASUREMENT.md).
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch

from harness.distributed.team import Team
from harness.measure import SavedTensorBytes, StepClock, count_flops, rss_bytes
from methods.base import Adapted
from tasks.progress import bar as progress_bar


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def autocast_for(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def optimizer_step(adapted: Adapted, micro_batches: list[dict[str, torch.Tensor]], step: int,
                   grad_clip: float | None, autocast: contextlib.AbstractContextManager,
                   profile: dict[str, int] | None = None, team: Team | None = None) -> torch.Tensor:
    """One optimizer step through the method's hooks; returns the (device) loss.

    With a ``team`` (several processes) this rank computes its share of every micro-batch, the
    gradients are averaged across ranks before clipping, and the loss returned is the global
    batch's (``harness.distributed.team``).

    With ``profile`` given, forward/backward run under the saved-tensor and FLOP counters and
    the gradient / optimizer-state bytes are read at the moments they exist; such a step must
    not be timed.
    """
    model = adapted.model
    adapted.before_step(step)
    with (SavedTensorBytes(model) if profile is not None else contextlib.nullcontext()) as saved, \
         (count_flops() if profile is not None else contextlib.nullcontext()) as flops:
        loss_sum = None
        for mb in micro_batches:
            part, weight = team.share(mb) if team is not None else (mb, 1.0)
            with autocast:
                out = model(**part)
                # a share without loss tokens contributes zero (its mean would be 0/0)
                loss = (out.loss * weight if weight else out.logits.sum() * 0.0) / len(micro_batches)
            loss.backward()
            loss_sum = loss.detach() if loss_sum is None else loss_sum + loss.detach()
    if team is not None:
        team.sync_gradients(adapted)
        loss_sum = team.global_loss(loss_sum)
    if profile is not None:
        profile["grad_bytes"] = adapted.grad_bytes()
    adapted.clip_gradients(grad_clip)
    adapted.optimizer.step()
    adapted.scheduler.step()
    adapted.after_step(step)
    adapted.zero_grad()
    if profile is not None:
        profile.update(activation_bytes=saved.bytes, flops_per_step=flops["flops"],
                       optimizer_state_bytes=adapted.optimizer_state_bytes(),
                       extra_state_bytes=adapted.extra_state_bytes())
    return loss_sum


@dataclass
class TrainResult:
    steps: list[dict[str, Any]] = field(default_factory=list)
    profile: dict[str, int] = field(default_factory=dict)  # activation/grad/optimizer bytes, FLOPs
    train_time_s: float = 0.0
    profiled_step: int = -1


def memory_now(device: torch.device) -> dict[str, int]:
    """Memory in use right now, for the step log: allocated tensors on CUDA, the process RSS on CPU."""
    if device.type == "cuda":
        return {"mem_allocated_bytes": torch.cuda.memory_allocated(device)}
    return {"rss_bytes": rss_bytes()}


def train(adapted: Adapted, batches: Iterable[list[dict[str, torch.Tensor]]], steps: int, device: torch.device,
          grad_clip: float | None, precision: str = "auto", profile_step: int = 0, progress: bool = True,
          on_step: Callable[[dict[str, Any]], None] | None = None, team: Team | None = None) -> TrainResult:
    """Train ``steps`` optimizer steps; ``on_step`` sees each step's record as soon as it is taken
    (the live step log, trackers), outside the timed region. With a ``team``, a step's time is the
    slowest rank's and its memory the largest rank's, and ``comm_bytes`` what the step passed to
    collectives."""
    result, clock = TrainResult(profiled_step=profile_step), StepClock(device)
    adapted.model.train()
    batch_iter, autocast = iter(batches), autocast_for(device, precision)
    bar = progress_bar(range(steps), desc="train", unit="step", disable=not progress)
    start = clock.now()
    for step in bar:
        micro_batches = next(batch_iter)
        profiled = step == profile_step
        lr = adapted.current_lr()
        t0 = clock.now()
        loss = optimizer_step(adapted, micro_batches, step, grad_clip, autocast, result.profile if profiled else None,
                              team)
        t1 = clock.now()
        loss_value = float(loss)
        if not math.isfinite(loss_value):
            raise TrainingDiverged(f"loss is {loss_value} at step {step}")
        tokens = sum(int(mb["attention_mask"].sum()) for mb in micro_batches)
        figures = {"step_time_s": t1 - t0, **memory_now(device)}
        if team is not None:
            figures = {**team.largest(figures), "comm_bytes": team.take_comm_bytes()}
        result.steps.append({"step": step, "loss": loss_value, "lr": lr, "tokens": tokens, "profiled": profiled,
                             **figures})
        if on_step is not None:
            on_step(result.steps[-1])
        bar.set_postfix(loss=f"{loss_value:.3f}", refresh=False)
    result.train_time_s = clock.now() - start
    return result
