"""The recipe of a rank other than 0: the driver's work in step with rank 0, writing nothing.

Rank 0 runs the driver (``driver.run_one`` / ``eval_only``: evaluations, the record, saving: the
only writer). Every other rank builds the same model, scores its batches of every evaluation
rank 0 announces (``serve``), adapts the model with the same method context (no run folder),
trains on its share of every step, and meets rank 0 in the same collectives in the same order:
the evaluations before training, the broadcast of rank 0's trainable parameters after ``adapt``
(which waits for rank 0's evaluations), the per-step collectives, ``end_of_training``, then the
evaluations after training.
"""
from __future__ import annotations

from typing import Any

import torch

from harness import distributed, driver
from harness.config import RunConfig, config_from_dict
from harness.distributed.team import Team, end_of_training
from harness.measure import MemoryProbe
from harness.trainer import train
from methods import registry as method_registry


def follow(cfg: RunConfig, team: Team) -> None:
    """Do rank ``team.rank``'s part of ``cfg``; raises what goes wrong (the worker exits non-zero
    and torch.distributed.run ends every rank)."""
    device = team.device
    torch.manual_seed(cfg.seed)
    model, tokenizer = driver.load_for_run(cfg, device)
    serve(team, cfg, model, tokenizer)  # the evaluations before training (bench eval: all of them)
    if not cfg.train_tasks:
        return
    spec = method_registry.get(cfg.method)
    first = driver.build_stage(cfg, 1, tokenizer, device, None)
    adapted = spec.adapt(model, config_from_dict(spec.config_cls, cfg.method_config), first.ctx)
    team.start_from_rank0(adapted, cfg.seed)
    probe = MemoryProbe(device)
    with probe.track():  # one stage: a --sequence runs on one process (harness.cli refuses it)
        train(adapted, first.batches, first.steps, device, first.ctx.grad_clip, cfg.train.precision,
              profile_step=-1, progress=False, team=team)
    end_of_training(team, adapted, probe)
    serve(team, cfg, adapted.for_eval(), tokenizer)


def serve(team: Team, cfg: RunConfig, model: torch.nn.Module, tokenizer: Any) -> None:
    """Score this rank's batches of each evaluation rank 0 announces, until it says to go on."""
    while (instruction := team.receive()) != distributed.CONTINUE:
        _, task_name, phase, items = instruction
        driver.evaluate_task(model, tokenizer, task_name, cfg, phase, team.device, False, items)
