"""``bench perf``: training-step speed of methods against the frozen floor, in one process.

The *floor* is the cheapest step any adapter method can have on this model: every weight frozen,
forward plus the backward that input gradients need (to the embeddings' output), no weight
gradient, no optimizer. Methods are timed round by round (the order rotates each round), and
within a round each method's steps alternate one by one with floor steps: a method's ratio for the
round is the median of its steps over the median of the floor steps taken between them, so both
sides of a ratio see the same moment of a noisy machine. On this project's 2-core VMs that cut
the round-to-round spread of a ratio from ~15% (method and floor timed a second apart) to ~5%.
Figures are summarised over rounds.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from harness import distributed, machineload, metrics
from harness.distributed.team import Team
from harness.config import TrainConfig, build_configs
from harness.measure import SavedTensorBytes, StepClock, count_flops, percentile, total_params
from harness.models import SMOLLM2_SHAPES, TINY_LLAMA_CONFIG, build_llama
from harness.perf.counters import open_instruction_counter
from harness.perf.settings import PerfConfig
from harness.perf.opprofile import profile_ops
from harness.trainer import autocast_for, optimizer_step
from methods import registry
from methods.base import TrainContext
from tasks.progress import bar as progress_bar

SHAPES = {"tiny": TINY_LLAMA_CONFIG, "smollm2": SMOLLM2_SHAPES}
FLOOR = "floor"


class Contender:
    """One timed thing: a method's adapted model, or the frozen floor."""

    def __init__(self, name: str, step_fn: Callable[[int, dict[str, int] | None], None], model: nn.Module,
                 trainable: int, tokens: int, start_step: int = 0) -> None:
        self.name, self.step_fn, self.model, self.trainable, self.tokens = name, step_fn, model, trainable, tokens
        self.step = start_step
        self.round_times: list[list[float]] = []
        self.floor_times: list[list[float]] = []  # per round, the floor steps alternated with this one's
        self.profile: dict[str, int] = {}
        self.comm_bytes: list[int] = []  # several processes: what each step passed to collectives
        self.slowdown = 1.0

    def run(self, n: int, clock: StepClock) -> list[float]:
        """Run ``n`` steps, each timed on its own.

        With an injected slowdown (a test aid), the step then busy-waits ``slowdown - 1`` times its
        own measured time on the same clock inside the timed region, so each timed step takes
        ``slowdown`` x as long (busy, not asleep: a CPU-time clock must see the extra work).
        """
        times = []
        for _ in range(n):
            t0 = clock.now()
            self.step_fn(self.step, None)
            if self.slowdown != 1.0:
                _busy_until(clock, clock.now() + (self.slowdown - 1.0) * (clock.now() - t0))
            times.append(clock.now() - t0)
            self.step += 1
        return times

    def untimed_step(self, profile: dict[str, int] | None = None) -> None:
        self.step_fn(self.step, profile)
        self.step += 1


def _busy_until(clock: Any, end: float) -> None:
    """Spin until ``clock`` reads ``end``, reading it about every 0.2 ms: the CPU-time clock is a
    system call, and a tight loop of them (thousands per step) slowed the floor step that
    followed, hiding part of the injected slowdown."""
    while (left := end - clock.now()) > 0:
        stop = time.perf_counter() + min(2e-4, left)
        while time.perf_counter() < stop:
            pass


class ThreadCpuClock:
    """CPU time of the calling thread. With one intra-op thread every op runs on it, so this is
    the step's work without the time the scheduler gave other processes: the gate's clock on a
    shared machine, where wall time mostly measures the neighbours (issue 18)."""

    def now(self) -> float:
        return time.thread_time()


def _batch(cfg: PerfConfig, vocab: int, device: torch.device) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(cfg.seed)
    ids = torch.randint(3, vocab, (cfg.batch_size, cfg.seq_len), generator=g).to(device)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}


def _floor(cfg: PerfConfig, shape: dict[str, Any], device: torch.device, batch: dict[str, torch.Tensor],
           team: Team | None) -> Contender:
    """The frozen floor; on several processes, each rank's floor step is on its share of the batch
    (the floor at the same world size: no gradient, so no collective)."""
    model = build_llama(shape, seed=cfg.seed).to(device).requires_grad_(False)
    model.train()
    autocast = autocast_for(device, "auto")
    embed = model.get_input_embeddings()
    tokens = batch["attention_mask"].numel()
    if team is not None:
        batch = team.share(batch)[0]

    def step(_: int, profile: dict[str, int] | None) -> None:
        with (SavedTensorBytes(model) if profile is not None else contextlib.nullcontext()) as saved, \
             (count_flops() if profile is not None else contextlib.nullcontext()) as flops:
            x = embed(batch["input_ids"]).detach().requires_grad_(True)
            with autocast:
                loss = model(inputs_embeds=x, attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
            loss.backward()
        if profile is not None:
            profile.update(activation_bytes=saved.bytes, flops_per_step=flops["flops"], grad_bytes=0,
                           optimizer_state_bytes=0)

    return Contender(FLOOR, step, model, 0, tokens)


def _method(name: str, cfg: PerfConfig, shape: dict[str, Any], device: torch.device,
            batch: dict[str, torch.Tensor], team: Team | None) -> Contender:
    spec = registry.get(name)
    method_cfg, train, _ = build_configs(spec, cfg.overrides, None, TrainConfig())
    model = build_llama(shape, seed=cfg.seed).to(device)
    total = 10**9  # long cosine: the LR stays near its peak, as in the middle of a real run
    ctx = TrainContext(lr=train.lr, total_steps=total, warmup_steps=0, grad_clip=train.grad_clip or None,
                       seed=cfg.seed, device=str(device),
                       calibration_batches=lambda: iter([batch] * 64))
    adapted = spec.adapt(model, method_cfg, ctx)
    adapted.model.train()
    autocast = autocast_for(device, "auto")

    def step(i: int, profile: dict[str, int] | None) -> None:
        optimizer_step(adapted, [batch], i, ctx.grad_clip, autocast, profile, team)
        if team is not None:
            contender.comm_bytes.append(team.take_comm_bytes())

    contender = Contender(name, step, adapted.model, adapted.trainable_params(), batch["attention_mask"].numel(),
                          cfg.start_step)
    return contender


def _slowest_rank(contenders: list[Contender], team: Team) -> None:
    """Every timed step's time becomes the slowest rank's (each rank ran the same steps in the
    same order), and each method's comm_bytes_per_step what one of its steps passed to collectives."""
    for c in contenders:
        for times in (c.round_times, c.floor_times):
            flat = team.largest({f"{r}.{i}": t for r, round_ in enumerate(times) for i, t in enumerate(round_)})
            for r, round_ in enumerate(times):
                round_[:] = [flat[f"{r}.{i}"] for i in range(len(round_))]
        c.profile.update(team.largest({k: v for k, v in c.profile.items() if k.endswith("_bytes")}))
        if c.comm_bytes:
            c.profile["comm_bytes_per_step"] = statistics.fmean(c.comm_bytes)


def spread(values: list[float]) -> float:
    """Half the p10-p90 range: the typical round-to-round wobble of a ratio."""
    return (percentile(values, 90) - percentile(values, 10)) / 2 if len(values) > 1 else 0.0


def measure(cfg: PerfConfig, progress: bool = True, profile_steps: int = 0) -> dict[str, Any]:
    """Time every contender; with ``profile_steps``, profile that many more (untimed) steps each."""
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        return _measure(cfg, progress, profile_steps)
    finally:
        torch.set_num_threads(threads)


def _measure(cfg: PerfConfig, progress: bool, profile_steps: int) -> dict[str, Any]:
    device = torch.device(cfg.device)
    shape = SHAPES[cfg.shape]
    batch = _batch(cfg, shape["vocab_size"], device)
    names = list(dict.fromkeys(cfg.methods))
    team = distributed.current()  # bench perf --nproc N: every rank measures, rank 0 reports
    contenders = [_floor(cfg, shape, device, batch, team)] + [_method(n, cfg, shape, device, batch, team)
                                                               for n in names]
    clock = ThreadCpuClock() if cfg.clock == "cpu" else StepClock(device)
    counter, no_counter = open_instruction_counter() if device.type == "cpu" else (None, "not a CPU run")
    for c in contenders:  # warm-up, one profiled step, one counted step: all untimed
        c.run(cfg.warmup_steps, clock)
        c.untimed_step(c.profile)
        if counter is not None:
            c.profile["instructions_per_step"] = counter.count(c.untimed_step)
        c.slowdown = cfg.inject_slowdown.get(c.name, 1.0)
    if counter is not None:
        counter.close()
    floor, methods = contenders[0], contenders[1:]
    bar = progress_bar(range(cfg.rounds), desc="perf rounds", unit="round", disable=not progress)
    with machineload.track() as load:  # the timed rounds only
        for r in bar:
            floor.round_times.append([])
            for c in methods[r % len(methods):] + methods[: r % len(methods)]:
                mine, floors = [], []
                for _ in range(cfg.steps_per_round):  # one by one: both sides of the ratio see the same moment
                    floors += floor.run(1, clock)
                    mine += c.run(1, clock)
                c.round_times.append(mine)
                c.floor_times.append(floors)
                floor.round_times[-1] += floors
            if not methods:
                floor.round_times[-1] = floor.run(cfg.steps_per_round, clock)
    if team is not None:
        _slowest_rank(contenders, team)
    op_profiles: dict[str, dict[str, dict[str, float]]] = {}
    for c in progress_bar(contenders if profile_steps else [], desc="profiling", unit="method", disable=not progress):
        op_profiles[c.name] = profile_ops(lambda c=c: c.run(profile_steps, clock), profile_steps, device)
    base_params = total_params(floor.model)
    median_s, mean_s, p10_s, p90_s, tokens_s = metrics.CLOCK_FIGURES[cfg.clock]  # CPU time has figures of its own
    rows: dict[str, dict[str, Any]] = {}
    for c in contenders:
        all_times = [t for round_ in c.round_times for t in round_]
        paired = c.floor_times or c.round_times  # the floor is paired with itself
        ratios = [statistics.median(m) / statistics.median(f) for m, f in zip(c.round_times, paired)]
        row = {
            "ratio_to_floor_rounds": ratios,
            median_s: statistics.median(all_times),
            mean_s: statistics.fmean(all_times),
            p10_s: percentile(all_times, 10),
            p90_s: percentile(all_times, 90),
            "ratio_to_floor": statistics.median(ratios),
            "ratio_to_floor_spread": spread(ratios),
            "ratio_to_floor_mean": statistics.fmean(all_times) / statistics.fmean(
                [t for round_ in paired for t in round_]),
            tokens_s: c.tokens / statistics.median(all_times),
            "trainable_params": c.trainable,
            "trainable_pct": 100.0 * c.trainable / base_params,
            **c.profile,
        }
        row["mem_accounted_bytes"] = sum(row.get(k, 0) for k in
                                         ("activation_bytes", "grad_bytes", "optimizer_state_bytes"))
        rows[c.name] = row
    if "lora" in rows:
        lora = [statistics.median(t) for t in next(c for c in contenders if c.name == "lora").round_times]
        lora_mean = rows["lora"][mean_s]
        for c in contenders:
            ratios = [statistics.median(t) / l for t, l in zip(c.round_times, lora)]
            rows[c.name]["ratio_to_lora"] = statistics.median(ratios)
            rows[c.name]["ratio_to_lora_spread"] = spread(ratios)
            rows[c.name]["ratio_to_lora_mean"] = rows[c.name][mean_s] / lora_mean
    for name, row in rows.items():  # only catalogued figures are written
        metrics.check(row, f"bench perf ({name})")
    from harness.environment import describe_device

    result = {"config": dataclasses.asdict(cfg), "device": describe_device(device), "torch": torch.__version__,
              "instructions": "counted: user-space, one thread, one untimed step" if counter else no_counter,
              "methods": rows, "load": load}
    if op_profiles:
        result["op_profile"] = {"steps": profile_steps, "ops": op_profiles,
                                "what": "profiler self time (ms) and calls per step, from untimed steps run "
                                        "after the timed rounds; a diagnostic, not a step time"}
    return result


def perf_config_from_dict(values: dict[str, Any]) -> PerfConfig:
    """A ``PerfConfig`` from its JSON form (the ranks of ``bench perf --nproc`` read it)."""
    return PerfConfig(**{**values, "methods": tuple(values["methods"])})


def format_table(result: dict[str, Any]) -> str:
    cfg = result["config"]
    head = (f"bench perf: {cfg['shape']} shapes, batch {cfg['batch_size']} x {cfg['seq_len']} tokens, "
            f"{cfg['rounds']} rounds x {cfg['steps_per_round']} steps, device {result['device']['name']}, "
            f"{result['device'].get('threads', '-')} threads")
    several = result.get("world_size", 1) > 1
    if several:
        head += (f"\n{result['world_size']} processes: the batch shared, step times the slowest rank's, the floor "
                 "on each rank's share; comm MiB = bytes a step passed to collectives")
    if cfg.get("inject_slowdown"):
        head += "\nINJECTED SLOWDOWN (test aid, not a real figure): " + ", ".join(
            f"{m} x{f:g}" for m, f in cfg["inject_slowdown"].items())
    if result.get("load"):  # older JSON files have none
        busy = machineload.busier_than_cores(result["load"])
        head += (f"\n{'BUSY MACHINE: ' if busy else ''}{machineload.load_note(result['load'])}"
                 + ("; step times are slower than on a quiet machine (ratios, interleaved, suffer less)"
                    if busy else ""))
    median_s, _, p10_s, p90_s, _ = clock_figures(cfg)
    cols = ["method", "cpu_step_s" if median_s != "step_time_s" else "step_s", "p10-p90", "x floor", "+-", "x lora", "+-", "mean x lora", "act MiB",
            "grad MiB", "opt MiB", "trainable%"] + (["comm MiB"] if several else [])
    mib = lambda b: f"{(b or 0) / 2**20:.1f}"  # noqa: E731
    rows = []
    for name, r in result["methods"].items():
        rows.append([
            name, f"{_either(r, median_s):.3f}", f"{_either(r, p10_s):.3f}-{_either(r, p90_s):.3f}",
            f"{r['ratio_to_floor']:.3f}", f"{r['ratio_to_floor_spread']:.3f}",
            f"{r['ratio_to_lora']:.3f}" if "ratio_to_lora" in r else "-",
            f"{r['ratio_to_lora_spread']:.3f}" if "ratio_to_lora_spread" in r else "-",
            f"{r['ratio_to_lora_mean']:.3f}" if "ratio_to_lora_mean" in r else "-",
            mib(r.get("activation_bytes")), mib(r.get("grad_bytes")), mib(r.get("optimizer_state_bytes")),
            f"{r['trainable_pct']:.3f}",
        ] + ([mib(r.get("comm_bytes_per_step"))] if several else []))
    widths = [max(len(str(x)) for x in col) for col in zip(cols, *rows)]
    fmt = lambda row: "  ".join(str(x).rjust(w) for x, w in zip(row, widths))  # noqa: E731
    return "\n".join([head, fmt(cols), *(fmt(r) for r in rows)])


def clock_figures(cfg: dict[str, Any]) -> tuple[str, ...]:
    """The time figures a measurement of setup ``cfg`` stores (wall clock or CPU clock)."""
    return metrics.CLOCK_FIGURES[cfg.get("clock", "wall")]


def _either(row: dict[str, Any], name: str) -> float:
    """A time figure of a row; measurements written before CPU time had figures of its own stored
    it under the wall-clock name (the committed baselines, format 3)."""
    return row[name] if name in row else row[metrics.CLOCK_FIGURES["wall"][metrics.CLOCK_FIGURES["cpu"].index(name)]]


def write_json(result: dict[str, Any], path: Path) -> None:
    from harness.safe_io import write_text

    write_text(Path(path), json.dumps(result, indent=2) + "\n")
