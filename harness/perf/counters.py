"""Hardware instruction counts per step, via Linux ``perf_event_open`` (a ctypes syscall).

Why: a step's retired instructions hardly move with load or scheduling, unlike its wall time, so
where the kernel exposes the counter it is a gate that noise cannot trip (CodSpeed's approach).
Many VMs expose no hardware PMU and ``kernel.perf_event_paranoid`` may forbid it; then the
counter is unavailable and :func:`open_instruction_counter` says why instead of failing.

Only the calling thread is counted, so the counted step runs with one intra-op thread: with
several, the split of work (and OpenMP spin-waits) between threads would make the count vary.
"""
from __future__ import annotations

import ctypes
import os
import platform
import struct
from typing import Callable

import torch

_SYSCALL = {"x86_64": 298, "aarch64": 241}  # __NR_perf_event_open
_ATTR_SIZE = 112  # PERF_ATTR_SIZE_VER5: every kernel since 4.1 accepts it
_HW, _INSTRUCTIONS = 0, 1  # PERF_TYPE_HARDWARE, PERF_COUNT_HW_INSTRUCTIONS
_DISABLED, _EXCLUDE_KERNEL, _EXCLUDE_HV = 1 << 0, 1 << 5, 1 << 6
_IOC_ENABLE, _IOC_DISABLE, _IOC_RESET = 0x2400, 0x2401, 0x2403


class InstructionCounter:
    """User-space instructions retired by the calling thread while a function runs."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._libc = ctypes.CDLL(None, use_errno=True)

    def count(self, fn: Callable[[], object]) -> int:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            self._libc.ioctl(self.fd, _IOC_RESET, 0)
            self._libc.ioctl(self.fd, _IOC_ENABLE, 0)
            fn()
            self._libc.ioctl(self.fd, _IOC_DISABLE, 0)
        finally:
            torch.set_num_threads(threads)
        return struct.unpack("q", os.read(self.fd, 8))[0]

    def close(self) -> None:
        os.close(self.fd)


def open_instruction_counter() -> tuple[InstructionCounter | None, str]:
    """The counter, or None and the reason it is unavailable here."""
    number = _SYSCALL.get(platform.machine())
    if number is None or not os.path.exists("/proc/sys/kernel/perf_event_paranoid"):
        return None, f"no perf_event_open on {platform.system()} {platform.machine()}"
    attr = bytearray(_ATTR_SIZE)
    struct.pack_into("IIQ", attr, 0, _HW, _ATTR_SIZE, _INSTRUCTIONS)
    struct.pack_into("Q", attr, 40, _DISABLED | _EXCLUDE_KERNEL | _EXCLUDE_HV)
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.syscall(number, ctypes.create_string_buffer(bytes(attr), _ATTR_SIZE), 0, -1, -1, 0)
    if fd < 0:
        err = ctypes.get_errno()
        return None, (f"perf_event_open(instructions) refused: {os.strerror(err)}"
                      + (" (no hardware PMU exposed, e.g. a VM)" if err == 2 else ""))
    return InstructionCounter(fd), ""
