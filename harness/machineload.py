"""How busy the machine was while a run trained, and the one rule that flags its step times.

A step time is only a property of the method when the method had the cores to itself. On a
shared machine other processes steal CPU time and the same code runs slower; the figure is
still stored (never hidden) but must carry a flag. Recorded per training (``load_record``):

* the 1/5/15-minute load averages at the start and at the end of training, and the CPU count;
* the CPU time the worker process got (all its threads, user + system) against wall time:
  ``cpu_time_s / wall_s`` is how many cores' worth of work it actually ran.

The rule (``busier_than_cores``): a run's step times are flagged when the 1-minute load average
at the start or at the end of training exceeded the number of CPUs, i.e. more runnable
threads than cores, so some of them waited. The load average counts the worker's own threads,
so a machine running only the worker stays at or under its cores.
"""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from typing import Any, Iterator

LOAD_KEYS = ("load1", "load5", "load15")


@dataclass(frozen=True)
class LoadSample:
    """Load averages and this process's CPU time at one instant."""

    load1: float
    load5: float
    load15: float
    cpu_time_s: float  # user + system time of every thread of this process so far
    wall_s: float  # time.perf_counter() at the same instant


def sample() -> LoadSample:
    """Read the load averages (0.0 where the OS has none) and this process's CPU time now."""
    try:
        loads = os.getloadavg()
    except (OSError, AttributeError):
        loads = (0.0, 0.0, 0.0)
    return LoadSample(*(float(x) for x in loads), time.process_time(), time.perf_counter())


def cpu_count() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one, else all)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def load_record(start: LoadSample, end: LoadSample, cpus: int) -> dict[str, Any]:
    """The ``load`` entry of a run record, from samples taken at the start and end of training."""
    wall = end.wall_s - start.wall_s
    cpu = end.cpu_time_s - start.cpu_time_s
    return {
        "cpu_count": cpus,
        "start": {k: round(getattr(start, k), 2) for k in LOAD_KEYS},
        "end": {k: round(getattr(end, k), 2) for k in LOAD_KEYS},
        "cpu_time_s": round(cpu, 3),
        "wall_s": round(wall, 3),
        "cores_used": round(cpu / wall, 2) if wall > 0 else None,
    }


@contextlib.contextmanager
def track() -> Iterator[dict[str, Any]]:
    """Yields a dict that holds ``load_record`` of the enclosed block once it ends."""
    out: dict[str, Any] = {}
    start = sample()
    try:
        yield out
    finally:
        out.update(load_record(start, sample(), cpu_count()))


def combine(loads: list[dict[str, Any]]) -> dict[str, Any]:
    """Several trainings of one run (the stages of a sequence) as one: first start, last end, summed times."""
    if len(loads) == 1:
        return loads[0]
    cpu, wall = sum(x["cpu_time_s"] for x in loads), sum(x["wall_s"] for x in loads)
    return {**loads[0], "end": loads[-1]["end"], "cpu_time_s": round(cpu, 3), "wall_s": round(wall, 3),
            "cores_used": round(cpu / wall, 2) if wall > 0 else None,
            "peak_load1": max(peak_load(x) for x in loads)}


def peak_load(load: dict[str, Any]) -> float:
    """The highest 1-minute load average seen at the start or end of any training of the run."""
    return max([float(load.get(when, {}).get("load1", 0.0)) for when in ("start", "end")]
               + [float(load.get("peak_load1", 0.0))])


def busier_than_cores(load: dict[str, Any] | None) -> bool:
    """The flag rule (see the module docstring); False when no load was recorded."""
    if not load or not load.get("cpu_count"):
        return False
    return peak_load(load) > float(load["cpu_count"])


def load_note(load: dict[str, Any]) -> str:
    """One line for a summary or a footnote: the loads, the CPU count and the cores the worker got."""
    text = (f"load {load['start']['load1']:g} -> {load['end']['load1']:g} (1-min average, start -> end of "
            f"training) on {load['cpu_count']} CPUs")
    if load.get("cores_used") is not None:
        text += f"; the worker ran {load['cores_used']:g} cores' worth ({load['cpu_time_s']:g} CPU-s in {load['wall_s']:g} s)"
    return text
