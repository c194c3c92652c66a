"""This machine: each run in a fresh worker process, or in this process.

``local`` starts one worker per run, one at a time, so memory figures are not polluted by
earlier runs and a crash (out of memory, segfault, a killed worker) cannot end the grid. On CPU
the workers are forked from a fork server that has imported what every run imports (torch,
transformers, peft: seconds per run saved; nothing else is inherited); for CUDA they are spawned,
because an import may have touched CUDA in the fork server, and CUDA does not survive a fork.
``inline`` runs in the calling process instead: faster to start, used by tests and debugging,
but its RSS figures include whatever the process held before.
"""
from __future__ import annotations

import multiprocessing as mp
import os
from typing import Any, Sequence

from harness.config import RunConfig
from harness.executors.base import ExecutorOptions, Finished, Job, run_resolved
from harness.runfolder import settle


# the built-in models are Llamas; forkserver_init makes the fork server die with bench
PRELOAD = ["harness.executors.forkserver_init", "harness.driver", "peft", "transformers.models.llama.modeling_llama"]


def _worker(resolved: dict[str, Any], job: Job, bench_pid: int) -> None:
    from harness.executors.lifeline import die_with_parent
    from harness.safe_io import OutputError

    die_with_parent(bench_pid)
    try:
        record = run_resolved(resolved, job)
    except OutputError:  # recorded if it could be; settle says it in one line, not a traceback here
        raise SystemExit(4) from None
    raise SystemExit(0 if record["status"] == "ok" else 3)


def run_local(plans: Sequence[RunConfig], job: Job, options: ExecutorOptions) -> Finished:
    """One spawned worker per run, in order."""
    from harness.environment import pick_device

    device = pick_device(job.device)  # an unavailable device fails here, not in every worker
    if job.ranks.several:  # torch.distributed.run starts the run's processes (harness.distributed.launch)
        for cfg in plans:
            yield cfg, run_resolved(cfg.resolved(), job)
        return
    if device.type == "cpu":
        context = mp.get_context("forkserver")
        context.set_forkserver_preload(PRELOAD)
    else:
        context = mp.get_context("spawn")
    for cfg in plans:
        proc = context.Process(target=_worker, args=(cfg.resolved(), job, os.getpid()))
        proc.start()
        proc.join()
        code = proc.exitcode or 0
        how = f"worker process ended with {f'signal {-code}' if code < 0 else f'exit code {code}'}"
        yield cfg, settle(cfg, job.out, how)


def run_inline(plans: Sequence[RunConfig], job: Job, options: ExecutorOptions) -> Finished:
    """Every run in this process, in order."""
    from harness.driver import run_one
    from harness.environment import pick_device

    device = pick_device(job.device)
    for cfg in plans:
        if job.ranks.several:  # several processes cannot be this one
            yield cfg, run_resolved(cfg.resolved(), job)
            continue
        yield cfg, run_one(cfg, job.out, device, job.progress, job.command, not job.force, job.save,
                           job.report_to)
