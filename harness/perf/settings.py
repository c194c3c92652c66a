"""The settings of ``bench perf``, apart from the timing code so the parser reads its defaults
without importing torch (``bench --help`` stays fast)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class PerfConfig:
    shape: str = "smollm2"
    methods: tuple[str, ...] = ("lora", "losia-pro")
    batch_size: int = 8
    seq_len: int = 128
    rounds: int = 5
    steps_per_round: int = 3
    warmup_steps: int = 2
    start_step: int = 0  # step index the untimed warm-up starts from (schedules see a run at that point)
    overrides: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    seed: int = 0
    # intra-op CPU threads (0: torch's default). The gate baselines use 1: on a shared machine a
    # descheduled worker thread stalls every op at its barrier, which measures the neighbours
    threads: int = 0
    # "wall" (perf_counter, CUDA-synchronised) or "cpu" (this thread's CPU time; needs threads=1)
    clock: str = "wall"
    # a test aid for the gate, never for real figures: method -> factor by which each of its
    # timed steps is stretched (see Contender.run)
    inject_slowdown: dict[str, float] = field(default_factory=dict)
