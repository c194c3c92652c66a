"""Ray: every run a Ray task, scheduled by Ray on a local instance or an existing cluster.

A task asks for one GPU when the runs go to CUDA (``--device cuda``, or ``auto`` on a cluster
that has GPUs), else ``cpus_per_run`` CPUs; a run on ``--nproc N`` processes reserves N GPUs (or
at least N CPUs) on one node, where the task starts its ranks with torch.distributed.run. Ray
places it and sets CUDA_VISIBLE_DEVICES, so a task always uses the GPUs it was given.
``max_calls=1`` gives each run a fresh worker process (clean memory figures, nothing left over
from the previous run); ``max_retries=0``
because a run that died is recorded as failed and retried only on request (``--retry-failed``).
Runs write into the shared ``--out`` folder: on a multi-node cluster it must be a shared
filesystem and the project must be installed on every node.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from harness.config import RunConfig
from harness.executors.base import ExecutorOptions, Finished, Job, run_resolved
from harness.runfolder import settle


def _wants_gpu(ray: Any, device: str) -> bool:
    if device == "auto":
        return ray.cluster_resources().get("GPU", 0) >= 1
    return device.startswith("cuda")


def reservation(cpus_per_run: int, nproc: int, gpu: bool) -> tuple[int, int]:
    """(CPUs, GPUs) a run's task asks Ray for: one GPU per rank on CUDA, else a core per rank at least."""
    return (cpus_per_run, nproc) if gpu else (max(cpus_per_run, nproc), 0)


def run_ray(plans: Sequence[RunConfig], job: Job, options: ExecutorOptions) -> Finished:
    """Submit every run as a task at once; yield each as it ends. Joins (or starts) Ray here."""
    import ray
    started = not ray.is_initialized()
    if started:
        ray.init(address=options.ray_address)
    pending: dict[Any, RunConfig] = {}
    try:
        gpu = _wants_gpu(ray, job.device)
        cpus, gpus = reservation(options.cpus_per_run, job.ranks.nproc, gpu)
        task = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=0, max_calls=1)(run_resolved)
        remote_job = dataclasses.replace(job, device="cuda" if gpu else "cpu", progress=False)
        pending = {task.remote(cfg.resolved(), remote_job): cfg for cfg in plans}
        while pending:
            [ref], _ = ray.wait(list(pending), num_returns=1)
            cfg = pending.pop(ref)
            try:
                ray.get(ref)
                how = ""
            except ray.exceptions.RayError as err:  # the worker crashed or was killed, the node was lost
                how = f"Ray task failed: {type(err).__name__}: {str(err)[:500]}"
            yield cfg, settle(cfg, job.out, how)
    finally:
        for ref in pending:  # interrupted: do not leave runs going on the cluster
            ray.cancel(ref, force=True)
        if started:
            ray.shutdown()
