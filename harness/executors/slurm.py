"""Slurm through submitit: the runs go out as one job array, each run one job.

submitit's ``AutoExecutor`` picks Slurm where ``sbatch`` exists and its local executor
otherwise (``slurm_cluster="local"`` forces it: a job per run as a local process, for testing).
Resources per run: ``slurm_partition``, ``slurm_time_min``, ``slurm_gpus``, ``slurm_mem_gb``,
``cpus_per_run``. A run on several processes (``--nproc N --nnodes M``) is a job of M nodes with
N tasks each, one task per rank started by ``srun`` (``harness.distributed.worker.slurm_task``),
and N GPUs per node on CUDA. Job logs and submitit's pickles go to ``<out>/slurm/<job id>/``;
results go to the shared ``--out`` folder like any other run, so it must be on a filesystem the
nodes share.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

from harness.config import RunConfig
from harness.distributed.worker import slurm_task
from harness.executors.base import ExecutorOptions, Finished, Job, job_fields, run_resolved
from harness.runfolder import settle

POLL_S = 2.0  # how often job states are checked (submitit caches sacct answers between checks)


def run_slurm(plans: Sequence[RunConfig], job: Job, options: ExecutorOptions) -> Finished:
    """Submit the runs as a job array; yield each run as its job ends."""
    import submitit
    executor = submitit.AutoExecutor(folder=job.out / "slurm" / "%j", cluster=options.slurm_cluster)
    executor.update_parameters(name="peft-bench", timeout_min=options.slurm_time_min, gpus_per_node=options.slurm_gpus,
                               cpus_per_task=options.cpus_per_run, mem_gb=options.slurm_mem_gb,
                               slurm_partition=options.slurm_partition)
    remote_job = dataclasses.replace(job, progress=False)
    if job.ranks.several:
        ranks = job.ranks
        gpus = ranks.nproc if options.slurm_gpus or job.device.startswith("cuda") else 0  # one GPU per rank
        executor.update_parameters(nodes=ranks.nnodes, tasks_per_node=ranks.nproc, gpus_per_node=gpus)
        specs = [{"run": cfg.resolved(), "job": job_fields(remote_job), "ranks": dataclasses.asdict(ranks)}
                 for cfg in plans]
        jobs = executor.map_array(slurm_task, specs)
    else:
        jobs = executor.map_array(run_resolved, [cfg.resolved() for cfg in plans], [remote_job] * len(plans))
    by_id = {j.job_id: cfg for j, cfg in zip(jobs, plans)}
    try:
        for done in submitit.helpers.as_completed(jobs, poll_frequency=POLL_S):
            error = done.exception()  # FailedJobError / UncompletedJobError when the job died or timed out
            how = f"job {done.job_id} failed: {type(error).__name__}: {str(error)[:500]}" if error else ""
            yield by_id[done.job_id], settle(by_id[done.job_id], job.out, how)
    finally:
        for j in jobs:  # interrupted: cancel what is still queued or running
            if not j.done():
                j.cancel(check=False)
