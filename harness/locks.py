"""Locks on what two processes can share: a run folder and the result table of one ``--out``.

Two ``bench run`` / ``bench sweep`` on the same ``--out`` (a second terminal, parallel sweeps)
would otherwise do the same run twice, the last writer winning, and rebuild the table over each
other. The locks are ``flock`` locks (``filelock``): the kernel releases them when the holder
dies, so a killed process never leaves a stale lock behind. On a network filesystem without
working ``flock`` they degrade to no locking, the behaviour before them.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from filelock import FileLock, Timeout

RUN_LOCK = ".lock"  # inside runs/<run_id>/
TABLE_LOCK = ".table.lock"  # inside --out


@contextmanager
def run_lock(folder: Path) -> Iterator[bool]:
    """Hold the run folder's lock if it is free; yields False (at once) when another process
    holds it, i.e. is doing this run right now and the caller should leave it alone."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(folder / RUN_LOCK))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        yield False
        return
    try:
        yield True
    finally:
        lock.release()


def run_busy(folder: Path) -> bool:
    """Whether another process holds the run folder's lock (is executing that run now)."""
    if not (Path(folder) / RUN_LOCK).exists():
        return False
    with run_lock(folder) as free:
        return not free


@contextmanager
def table_lock(out: Path) -> Iterator[None]:
    """Wait for the table of ``out`` to be free: rebuilds take seconds, so waiting is cheap."""
    with FileLock(str(Path(out) / TABLE_LOCK)):
        yield
