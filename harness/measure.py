"""Every measured figure is produced here, named as in ``harness.metrics`` (MEASUREMENT.md beside it).

* step time: ``StepClock`` reads ``time.perf_counter`` after ``torch.cuda.synchronize`` so
  queued GPU work is inside the step it belongs to; ``step_summary`` (the one place a run's
  step times are summarised) drops warm-up steps and any step that ran a profiler, then
  reports median / p10 / p90 and tokens/s over the same steps.
* memory: CUDA caching-allocator peaks and NVML on GPU; on CPU a sampler thread reads the
  process RSS from /proc during training only (baseline taken right before training, and every
  run gets a fresh worker process, so earlier runs cannot pollute it).
* activation bytes: storages saved for backward during one profiled step (saved-tensor hooks),
  deduplicated by storage, excluding parameter storages (a saved weight costs no extra memory).
* FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` on that same profiled step.
"""
from __future__ import annotations

import contextlib
import os
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Collection, Iterator

import torch
from torch import nn

from methods.base import local_part


def synchronize(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


class StepClock:
    """Wall-clock timer that synchronises CUDA before each reading."""

    def __init__(self, device: torch.device | str) -> None:
        self.device = device

    def now(self) -> float:
        synchronize(self.device)
        return time.perf_counter()


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in [0, 100]) of a non-empty list."""
    s = sorted(values)
    if len(s) == 1:
        return s[0]
    pos = (len(s) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def timed_steps(n: int, warmup: int, excluded: Collection[int] = frozenset()) -> list[int]:
    """Indices of the steps a step-time figure summarises: after ``warmup``, not ``excluded``.

    With fewer steps than the warm-up, the non-excluded steps are used (and failing those, all),
    so a short smoke run still reports something honest rather than nothing.
    """
    kept = [i for i in range(n) if i >= warmup and i not in excluded]
    return kept or [i for i in range(n) if i not in excluded] or list(range(n))


def step_stats(times: list[float], warmup: int, excluded: Collection[int] = frozenset()) -> dict[str, float | int]:
    """Median / p10 / p90 of the ``timed_steps`` times; ``step_time_steps`` says how many went in."""
    kept = [times[i] for i in timed_steps(len(times), warmup, excluded)]
    if not kept:
        return {}
    return {
        "step_time_s": statistics.median(kept),
        "step_time_p10_s": percentile(kept, 10),
        "step_time_p90_s": percentile(kept, 90),
        "step_time_steps": len(kept),
    }


def step_summary(steps: list[dict[str, Any]], warmup: int, excluded: Collection[int] = frozenset()
                 ) -> dict[str, float | int]:
    """A run's step figures from its step log: ``step_stats`` plus ``tokens_per_s`` over the same steps."""
    out = step_stats([s["step_time_s"] for s in steps], warmup, excluded)
    kept = [steps[i] for i in timed_steps(len(steps), warmup, excluded)]
    seconds = sum(s["step_time_s"] for s in kept)
    out["tokens_per_s"] = sum(s["tokens"] for s in kept) / seconds if seconds > 0 else 0.0
    return out


def rss_bytes() -> int:
    """Resident set size of this process, from /proc (Linux); 0 where unavailable."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def release_freed_memory() -> None:
    """Return memory freed by Python/torch to the OS (glibc keeps it otherwise, inflating RSS)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: RSS may include freed-but-cached memory; the worker process still isolates runs


class RssSampler:
    """Samples process RSS in a background thread; ``peak`` is the max seen while running."""

    def __init__(self, interval_s: float = 0.005) -> None:
        self.interval_s = interval_s
        self.baseline = 0
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "RssSampler":
        self.baseline = self.peak = rss_bytes()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak = max(self.peak, rss_bytes())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        self.peak = max(self.peak, rss_bytes())


@dataclass
class MemoryProbe:
    """Peak memory during a block: CUDA allocator + NVML on GPU, RSS on CPU."""

    device: torch.device
    figures: dict[str, int] = field(default_factory=dict)

    @contextlib.contextmanager
    def track(self) -> Iterator[None]:
        if self.device.type == "cuda":
            others = other_gpu_processes(self.device)
            if others:
                self.figures["other_gpu_processes"] = others
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            nvml = NvmlSampler(self.device)
            with nvml:
                yield
            synchronize(self.device)
            self.figures["peak_mem_allocated_bytes"] = torch.cuda.max_memory_allocated(self.device)
            self.figures["peak_mem_reserved_bytes"] = torch.cuda.max_memory_reserved(self.device)
            if nvml.peak:
                self.figures["peak_mem_nvml_bytes"] = nvml.peak
        else:
            release_freed_memory()  # so evaluation or loading before training does not inflate the peak
            with RssSampler() as rss:
                yield
            self.figures["peak_rss_bytes"] = rss.peak
            self.figures["rss_before_train_bytes"] = rss.baseline


def _nvml_handle(device: torch.device):  # pragma: no cover - needs a GPU
    import pynvml

    pynvml.nvmlInit()
    index = device.index if device.index is not None else torch.cuda.current_device()
    return pynvml, pynvml.nvmlDeviceGetHandleByIndex(index)


def other_gpu_processes(device: torch.device) -> int:  # pragma: no cover - needs a GPU
    """Number of *other* processes holding memory on the device (memory figures are suspect)."""
    try:
        pynvml, handle = _nvml_handle(device)
        procs = pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
    except Exception:
        return 0
    return sum(1 for p in procs if p.pid != os.getpid())


class NvmlSampler(RssSampler):  # pragma: no cover - needs a GPU
    """This process's device memory as NVML sees it, sampled like RSS."""

    def __init__(self, device: torch.device, interval_s: float = 0.01) -> None:
        super().__init__(interval_s)
        try:
            self._pynvml, self._handle = _nvml_handle(device)
        except Exception:
            self._pynvml = None

    def _read(self) -> int:
        if self._pynvml is None:
            return 0
        try:
            procs = self._pynvml.nvmlDeviceGetComputeRunningProcesses(self._handle)
        except Exception:
            return 0
        return sum((p.usedGpuMemory or 0) for p in procs if p.pid == os.getpid())

    def __enter__(self) -> "NvmlSampler":
        self.baseline = self.peak = self._read()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak = max(self.peak, self._read())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()


class SavedTensorBytes:
    """Context manager counting bytes of storages saved for backward (activation memory).

    Parameters (and views of them) are excluded: autograd saving a weight costs nothing extra.
    """

    def __init__(self, model: nn.Module | None = None) -> None:
        self._param_ptrs = (
            {local_part(p).untyped_storage().data_ptr() for p in model.parameters()} if model is not None else set()
        )
        self._seen: set[tuple[str, int]] = set()
        self.bytes = 0
        self._ctx = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        if t.layout == torch.strided and not t.is_meta:
            st = t.untyped_storage()
            ptr = st.data_ptr()
            key = (str(t.device), ptr)
            if ptr not in self._param_ptrs and key not in self._seen:
                self._seen.add(key)
                self.bytes += st.nbytes()
        return t

    def __enter__(self) -> "SavedTensorBytes":
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._ctx.__exit__(*exc)


@contextlib.contextmanager
def count_flops() -> Iterator[dict[str, int]]:
    """Yields a dict whose ``"flops"`` is filled with the FLOPs of the enclosed work."""
    from torch.utils.flop_counter import FlopCounterMode

    out: dict[str, int] = {}
    mode = FlopCounterMode(display=False)
    with mode:
        yield out
    out["flops"] = int(mode.get_total_flops())


def param_bytes(model: nn.Module) -> int:
    """Bytes of all distinct parameter and buffer storages of the model."""
    from methods.base import tensor_bytes

    return tensor_bytes(list(model.parameters()) + list(model.buffers()))


def total_params(model: nn.Module) -> int:
    """Parameter count of the model with adapters, tied weights counted once."""
    seen: set[int] = set()
    n = 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            n += p.numel()
    return n
