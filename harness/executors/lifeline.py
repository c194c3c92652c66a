"""Workers die with their parent: a killed ``bench`` must not leave a run going on without it.

A worker forked from the fork server holds the fork server's "alive" pipe open, so when ``bench``
is killed (SIGKILL, a lost terminal) neither notices: both run on as orphans, training a run
nobody will record. On Linux ``prctl(PR_SET_PDEATHSIG)`` asks the kernel to kill a process when
its parent dies; the fork server sets it towards ``bench`` (``forkserver_init``) and every worker
towards its own parent (the fork server, or ``bench`` for spawned CUDA workers). Elsewhere this
is a no-op: the orphans are the platform's old behaviour, not a lost result (the run is left
``running`` and a rerun does it again).
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(parent_pid: int | None = None) -> None:
    """Be killed when the parent process dies; exit now if ``parent_pid`` is already gone.

    The check closes the race of a parent that died before the kernel was asked to watch it.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if parent_pid is not None and not _alive(parent_pid):
        os._exit(1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
