"""Where a training step's time goes, op by op, relative to the frozen floor (``bench perf --profile``).

The profiled steps run after the timed rounds and are never timed themselves: the profiler adds a
fixed cost per op, so it inflates contenders that issue many small ops. Its per-op *differences*
to the floor still show which ops a method adds (a gather, a small matmul, an optimizer loop),
which is what a gap in the timed ratio needs to be explained.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch.profiler import ProfilerActivity, profile


def profile_ops(run: Callable[[], object], steps: int, device: torch.device) -> dict[str, dict[str, float]]:
    """Self time (ms) and calls per step of every op that ``run`` (doing ``steps`` steps) issues.

    On CUDA the time is device self time (what the kernels took); on CPU it is CPU self time.
    """
    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        run()
    ops: dict[str, dict[str, float]] = {}
    for event in prof.key_averages():
        self_us = event.self_device_time_total if cuda else event.self_cpu_time_total
        if self_us <= 0:
            continue
        ops[event.key] = {"self_ms": self_us / 1e3 / steps, "calls": event.count / steps}
    return ops


def format_breakdown(profiles: dict[str, dict[str, dict[str, float]]], floor: str, top: int = 12) -> str:
    """For each method: the ops that add most time over the floor, per step."""
    base = profiles[floor]
    lines = []
    total_floor = sum(o["self_ms"] for o in base.values())
    for name, ops in profiles.items():
        if name == floor:
            continue
        total = sum(o["self_ms"] for o in ops.values())
        lines.append(f"\n{name}: profiled self time {total:.1f} ms/step vs floor {total_floor:.1f} "
                     f"(+{total - total_floor:.1f}); ops adding most over the floor:")
        rows = []
        for op in set(ops) | set(base):
            mine, theirs = ops.get(op, {}), base.get(op, {})
            diff = mine.get("self_ms", 0.0) - theirs.get("self_ms", 0.0)
            rows.append((diff, op, mine.get("calls", 0.0), theirs.get("calls", 0.0), mine.get("self_ms", 0.0)))
        rows.sort(reverse=True)
        head = ["op", "+ms/step", "ms/step", "calls/step", "floor calls"]
        body = [[op[:48], f"{d:+.1f}", f"{ms:.1f}", f"{c:.0f}", f"{fc:.0f}"] for d, op, c, fc, ms in rows[:top]]
        widths = [max(len(x) for x in col) for col in zip(head, *body)]
        fmt = lambda r: "  " + "  ".join(x.ljust(w) if i == 0 else x.rjust(w)  # noqa: E731
                                         for i, (x, w) in enumerate(zip(r, widths)))
        lines += [fmt(head), *(fmt(r) for r in body)]
    return "\n".join(lines)
