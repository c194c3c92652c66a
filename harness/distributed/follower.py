"""The recipe of a rank other than 0: the driver's training, in step with rank 0, writing nothing.

Rank 0 runs ``driver.run_one`` (evaluations, records, saving). Every other rank builds the same
model, adapts it with the same method context (no run folder: rank 0 is the only writer), trains
the same stages on its share of every step, and meets rank 0 in the same collectives, in the same
order: the broadcast of rank 0's trainable parameters after ``adapt``, the barrier before
training, the per-step collectives, and ``end_of_training``.
"""
from __future__ import annotations

import torch

from harness import driver
from harness.config import RunConfig, config_from_dict
from harness.distributed.team import Team, end_of_training
from harness.measure import MemoryProbe
from harness.trainer import train
from methods import registry as method_registry


def follow(cfg: RunConfig, team: Team) -> None:
    """Train ``cfg`` as rank ``team.rank``; raises what goes wrong (the worker exits non-zero and
    torch.distributed.run ends every rank)."""
    if not cfg.train_tasks:  # ``bench eval``: rank 0 evaluates
        return
    device = team.device
    torch.manual_seed(cfg.seed)
    spec = method_registry.get(cfg.method)
    model, tokenizer = driver.load_for_run(cfg, device)
    first = driver.build_stage(cfg, 1, tokenizer, device, None)
    adapted = spec.adapt(model, config_from_dict(spec.config_cls, cfg.method_config), first.ctx)
    team.start_from_rank0(adapted, cfg.seed)
    probe = MemoryProbe(device)
    with probe.track():  # one stage: a --sequence runs on one process (harness.cli refuses it)
        train(adapted, first.batches, first.steps, device, first.ctx.grad_clip, cfg.train.precision,
              profile_step=-1, progress=False, team=team)
    end_of_training(team, adapted, probe)
