"""``adapt`` for LoSiA / LoSiA-Pro: finds the targets, builds subnets, and drives the schedule.

Everything LoSiA-specific (profiling windows, importance, re-localization, re-warming) runs
in the ``Adapted`` hooks, so the uniform trainer needs to know nothing about it.
"""
from __future__ import annotations

import math
import re
from typing import Any

import torch
from torch import nn

from methods.base import Adapted, MethodConfigError, TrainContext, tensor_bytes
from methods.losia.config import SIBLINGS, LosiaConfig
from methods.losia.importance import ImportanceTracker, relocalize
from methods.losia.layer import SharedGather, Subnet, SubnetLinear
from methods.losia.optimizer import LosiaSchedule, SubnetAdamW
from methods.losia.subnets import SubnetLog, as_index, check_init, read_init_file

_LAYER_INDEX = re.compile(r"(?:^|\.)(\d+)\.")
RESELECTION_FIELDS = ["step", "layer", "matrix", "strategy", "rows_kept", "cols_kept"]


def _find_targets(model: nn.Module, cfg: LosiaConfig) -> list[tuple[str, nn.Linear, int | str]]:
    """(module name, linear, layer) for every target, lm_head first when it is one."""
    found: list[tuple[str, nn.Linear, int | str]] = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] in cfg.target_modules:
            match = _LAYER_INDEX.search(name)
            if match is None:
                raise MethodConfigError(f"target {name!r} is not inside a numbered decoder layer")
            found.append((name, module, int(match.group(1))))
    if not found:
        raise MethodConfigError(f"no nn.Linear named any of {cfg.target_modules} in the model")
    if cfg.output_dim_factor > 0:
        head = model.get_output_embeddings()
        if not isinstance(head, nn.Linear):
            raise MethodConfigError("output_dim_factor > 0 needs an nn.Linear output layer")
        embed = model.get_input_embeddings()
        if embed is not None and embed.weight is head.weight:
            raise MethodConfigError(
                "output_dim_factor > 0 needs an lm_head not tied to the input embedding "
                "(this model ties them); set output_dim_factor=0"
            )
        name = next(n for n, m in model.named_modules() if m is head)
        found.insert(0, (name, head, "lm_head"))
    return found


def _block_shape(cfg: LosiaConfig, weight: torch.Tensor, layer: int | str, name: str) -> tuple[int, int]:
    d_out, d_in = weight.shape
    if layer == "lm_head":
        shape = (math.floor(cfg.output_dim_factor * d_out), d_in)
    else:
        shape = (math.floor(cfg.rank_factor * d_out), math.floor(cfg.rank_factor * d_in))
    if min(shape) < 1:
        raise MethodConfigError(f"{name} ({d_out}x{d_in}) gets an empty subnet at this factor; raise rank_factor")
    return shape


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, module)


class LosiaAdapted(Adapted):
    """A model whose target weights train as subnets; hooks run LoSiA's schedule."""

    def __init__(self, model: nn.Module, cfg: LosiaConfig, ctx: TrainContext, subnets: list[Subnet],
                 dense: list[nn.Parameter], efficient: bool) -> None:
        self.cfg = cfg
        self.efficient = efficient
        self.subnets = subnets
        self.n_slots = max(s.slot for s in subnets) + 1
        self.slots: list[list[Subnet]] = [[s for s in subnets if s.slot == k] for k in range(self.n_slots)]
        self.trackers = {
            id(s): ImportanceTracker(cfg.importance, cfg.importance_beta1, cfg.importance_beta2) for s in subnets
        }
        self.reselections: list[list[Any]] = []
        self.log = SubnetLog(ctx.artifacts)
        self.logged_initial = False
        self.profiled: tuple[int, ...] = ()
        super().__init__(model, dense, ctx, *self._optimizer(dense, ctx))  # type: ignore[arg-type]

    def _optimizer(self, dense: list[nn.Parameter], ctx: TrainContext) -> tuple[SubnetAdamW, LosiaSchedule]:
        cfg = self.cfg
        optimizer = SubnetAdamW(self.slots, dense, ctx.lr, ctx.betas, ctx.eps, ctx.weight_decay, cfg.grad_scale,
                                release=cfg.release)
        # importance reads theta before the step's update (the spec's "theta and g at that step")
        optimizer.register_step_pre_hook(lambda *_: self._accumulate_importance())
        schedule = LosiaSchedule(optimizer, cfg.resolved_schedule, ctx.warmup_steps, ctx.total_steps,
                                 cfg.min_lr_ratio, cfg.period, self.n_slots * cfg.period, cfg.rewarm, cfg.release)
        return optimizer, schedule

    def start_stage(self, ctx: TrainContext) -> None:
        """Continued training: the subnets (R, C) carry over to the next task; Adam moments,
        importance accumulators and the LR schedule start afresh, and the asynchronous
        profiling cycle restarts at slot 0 (the driver counts steps from 0 in every stage)."""
        self.ctx = ctx
        self.optimizer, self.scheduler = self._optimizer(self.params, ctx)
        for tracker in self.trackers.values():
            tracker.reset()

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(),
                "subnets": {s.name: (s.rows.clone(), s.cols.clone()) for s in self.subnets}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        for s in self.subnets:
            s.set_index(*state["subnets"][s.name])

    # -- schedule -------------------------------------------------------------------------
    def profiled_slots(self, step: int) -> tuple[int, ...]:
        """Slots whose full gradients feed the importance estimate at ``step``."""
        window = step // self.cfg.period
        if self.cfg.sync:
            return tuple(range(self.n_slots)) if window % self.n_slots == 0 else ()
        return (window % self.n_slots,)

    def before_step(self, step: int) -> None:
        if not self.logged_initial:  # the subnets the first trained step starts from (after any resume)
            self.log.write(step, [(s.name + ".weight", s.rows, s.cols) for s in self.subnets])
            self.logged_initial = True
        self.profiled = self.profiled_slots(step)
        for s in self.subnets:
            s.profiling = s.slot in self.profiled

    def sync_tensors(self) -> list[torch.Tensor]:
        """Several processes: each subnet's block gradient, or, for the slot(s) being profiled,
        the full gradient the importance estimate reads (the block is sliced from it after the
        reduction); and the dense gradients. The rest of a plain-LoSiA full gradient stays local:
        nothing reads it. The reduced statistics are the same on every rank, so re-localization is."""
        grads = [g for s in self.subnets for g in s.sync_tensors()]
        return grads + [p.grad for p in self.params if p.grad is not None]

    def clip_gradients(self, max_norm: float | None) -> float | None:
        """Clip the subnet gradients and dense gradients together (not the full gradients).

        compat=release never clips: the release's clip call runs after its per-parameter hooks
        have already stepped and cleared every gradient.
        """
        if not max_norm or self.cfg.release:
            return None
        grads = [g for g in (s.block_grad() for s in self.subnets) if g is not None]
        grads += [p.grad for p in self.params if p.grad is not None]
        if not grads:
            return 0.0
        total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
        coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
        torch._foreach_mul_(grads, coef)
        return float(total)

    def _accumulate_importance(self) -> None:
        """Add this step's importance for the profiled slot(s), before the optimizer updates.

        theta is the weight before the update and g the unclipped full gradient (clipping only
        scales the block copies), as in the spec and the release.
        """
        for slot in self.profiled:
            for s in self.slots[slot]:
                grad = s.full_grad()
                if grad is not None:
                    self.trackers[id(s)].update(s.weight.detach(), grad)

    def after_step(self, step: int) -> None:
        """Re-select the profiled slot(s) at the end of their window."""
        if self.profiled and (step + 1) % self.cfg.period == 0:
            for slot in self.profiled:
                self._relocalize(slot, step)

    def _relocalize(self, slot: int, step: int) -> None:
        chosen: list[tuple[str, torch.Tensor, torch.Tensor]] = []
        for s in self.slots[slot]:
            tracker = self.trackers[id(s)]
            score = tracker.score()
            if score is None:  # no gradient reached this matrix during the window
                continue
            rows, cols, strategy = relocalize(score, *s.shape)
            kept_r = torch.isin(rows, s.rows).float().mean()
            kept_c = torch.isin(cols, s.cols).float().mean()
            s.set_index(rows, cols)
            self.optimizer.reset(s)  # type: ignore[attr-defined]
            tracker.reset()
            self.reselections.append([step, s.layer, s.matrix, strategy, round(float(kept_r), 3), round(float(kept_c), 3)])
            chosen.append((s.name + ".weight", s.rows, s.cols))
        self.log.write(step + 1, chosen)
        self.scheduler.rewarm(slot)  # type: ignore[attr-defined]

    def current_lr(self) -> float:
        """The global envelope (a re-warming slot runs below it for T steps)."""
        return self.ctx.lr * self.scheduler.envelope(self.scheduler.last_step)  # type: ignore[attr-defined]

    # -- accounting -----------------------------------------------------------------------
    def trainable_params(self) -> int:
        return sum(r * c for r, c in (s.shape for s in self.subnets)) + sum(p.numel() for p in self.params)

    def grad_bytes(self) -> int:
        grads = [t for s in self.subnets for t in s.grad_tensors()]
        return tensor_bytes(grads + [p.grad for p in self.params if p.grad is not None])

    def extra_state_bytes(self) -> int:
        """Peak importance accumulators: two fp32 full-size buffers per matrix being profiled.

        They only exist inside a window, so this reports the largest set alive at once
        (one slot when asynchronous, every slot when sync) rather than the current moment.
        """
        per_slot = [sum(2 * 4 * s.weight.numel() for s in subnets) for subnets in self.slots]
        return sum(per_slot) if self.cfg.sync else max(per_slot)

    def record(self) -> dict[str, Any]:
        cfg = self.cfg
        return {
            "variant": "losia-pro" if self.efficient else "losia",
            "rank_factor": cfg.rank_factor,
            "period": cfg.period,
            "slots": self.n_slots,
            "sync": cfg.sync,
            "importance": cfg.importance,
            "compat": cfg.compat,
            "schedule": cfg.resolved_schedule,
            "dense_rest": cfg.dense_rest,
            "targets": len(self.subnets),
            "subnet_params": sum(r * c for r, c in (s.shape for s in self.subnets)),
            "dense_params": sum(p.numel() for p in self.params),
            "reselection_fields": RESELECTION_FIELDS,
            "reselections": self.reselections,
        }


def check_on_model(model: nn.Module, cfg: LosiaConfig) -> None:
    """Before anything runs: the targets exist, every one gets a non-empty subnet, and an
    ``init_subnets`` file gives each its subnet's shape, in range (``model`` may be a weightless
    skeleton on the meta device)."""
    targets = _find_targets(model, cfg)
    shapes = [_block_shape(cfg, linear.weight, layer, name) for name, linear, layer in targets]
    if cfg.init_subnets:
        _check_init_file(cfg, targets, shapes)


def _check_init_file(cfg: LosiaConfig, targets: list[tuple[str, nn.Linear, int | str]],
                     shapes: list[tuple[int, int]]) -> dict[str, tuple[list[int], list[int]]]:
    given = read_init_file(cfg.init_subnets)
    check_init(cfg.init_subnets, given, {name + ".weight": (tuple(linear.weight.shape), shape)
                                         for (name, linear, _), shape in zip(targets, shapes)})
    return given


def _initial_subnets(cfg: LosiaConfig, targets: list[tuple[str, nn.Linear, int | str]], seed: int
                     ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(R, C) per target: from ``init_subnets`` (checked first), else random (seeded), sorted."""
    shapes = [_block_shape(cfg, linear.weight, layer, name) for name, linear, layer in targets]
    if cfg.init_subnets:
        given = _check_init_file(cfg, targets, shapes)
        return [(as_index(given[name + ".weight"][0]), as_index(given[name + ".weight"][1])) for name, _, _ in targets]
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randperm(linear.out_features, generator=gen)[:n_rows].sort().values,
             torch.randperm(linear.in_features, generator=gen)[:n_cols].sort().values)
            for (_, linear, _), (n_rows, n_cols) in zip(targets, shapes)]


def _share_gathers(subnets: list[Subnet]) -> None:
    """LoSiA-Pro: siblings reading one input (q, k, v; gate, up) gather its columns in one pass."""
    by_key = {(s.layer, s.matrix): s for s in subnets}
    for names in SIBLINGS:
        for layer in {s.layer for s in subnets}:
            members = [by_key[(layer, m)] for m in names if (layer, m) in by_key]
            if len(members) > 1:
                SharedGather(members)


def adapt_losia(model: nn.Module, cfg: LosiaConfig, ctx: TrainContext, efficient: bool) -> LosiaAdapted:
    """Freeze the model, set the initial subnets, swap in SubnetLinear for Pro."""
    targets = _find_targets(model, cfg)
    layers = sorted({layer for _, _, layer in targets if layer != "lm_head"})
    offset = 1 if cfg.output_dim_factor > 0 else 0
    slot_of = {layer: i + offset for i, layer in enumerate(layers)} | {"lm_head": 0}

    initial = _initial_subnets(cfg, targets, ctx.seed)
    for p in model.parameters():
        p.requires_grad_(False)
    subnets: list[Subnet] = []
    for (name, linear, layer), (rows, cols) in zip(targets, initial):
        subnet = Subnet(name, slot_of[layer], layer, linear.weight, rows, cols, efficient)
        subnets.append(subnet)
        if efficient:
            _set_module(model, name, SubnetLinear(linear, subnet))
        else:
            linear.weight.requires_grad_(True)
    if efficient:
        _share_gathers(subnets)
    target_ids = {id(s.weight) for s in subnets}
    dense = [p for p in model.parameters() if id(p) not in target_ids] if cfg.dense_rest else []
    for p in dense:
        p.requires_grad_(True)
    return LosiaAdapted(model, cfg, ctx, subnets, dense, efficient)
