"""``python -m harness.distributed.worker RUN_FILE``: one rank of a run, as torch.distributed.run
starts it (``launch.run_ranks``); under the Slurm executor, ``slurm_task`` in each of the job's
tasks (one per rank, started by ``srun``).

Rank 0 runs the driver (``driver.run_one``: evaluations, the record, saving: the only writer);
every other rank follows it (``follower.follow``). Exit code 0 when the rank's part succeeded, 3
when the run failed (rank 0 recorded why), 1 on an exception of a follower; the launcher ends the
other ranks as soon as one exits non-zero.
"""
from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

import torch


def rank_device(device: str) -> torch.device:
    """This rank's device: its own GPU (``cuda:LOCAL_RANK``) when the run is on CUDA, else the CPU."""
    from harness.environment import pick_device

    picked = pick_device(device)
    if picked.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return picked


def _join(device: torch.device, ranks: Any) -> Any:
    """Join the process group (from the environment the launcher or ``slurm_task`` set) as this
    process's team (``harness.distributed.current``)."""
    from harness import distributed
    from harness.distributed.launch import backend_for
    from harness.distributed.team import Team

    team = Team.from_environment(device, ranks.nnodes, ranks.timeout_s, backend_for(ranks, device.type), ranks.shard)
    distributed.join(team)
    return team


def slurm_task(spec: dict[str, Any]) -> int:
    """One rank as a task of a Slurm job (``srun`` starts one task per rank, on every node; the
    Slurm executor submits this through submitit): torch.distributed's variables from the job's,
    the rendezvous on the job's first node at a port derived from the job id."""
    import submitit

    env = submitit.JobEnvironment()
    os.environ.update(RANK=str(env.global_rank), WORLD_SIZE=str(env.num_tasks), LOCAL_RANK=str(env.local_rank),
                      MASTER_ADDR=env.hostnames[0], MASTER_PORT=str(20000 + int(str(env.job_id).split("_")[0]) % 20000))
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    return run_rank(spec, launcher_parent=False)


def main(argv: list[str]) -> int:
    """The launcher's entry point: the spec is the file ``launch.run_ranks`` wrote."""
    return run_rank(json.loads(Path(argv[0]).read_text()))


def run_rank(spec: dict[str, Any], launcher_parent: bool = True) -> int:
    """This process's part of the run ``spec`` (its settings, the job's, the ranks'); returns the
    exit code. ``launcher_parent``: the parent is torch.distributed.run, which this rank dies with."""
    from harness.config import run_config_from_dict
    from harness.distributed.launch import Ranks
    from harness.executors.base import job_from_fields
    from harness.executors.lifeline import die_with_parent

    if launcher_parent:
        die_with_parent(os.getppid())  # the launcher: a rank never outlives it
    if "perf" in spec:
        return _perf_rank(spec)
    job, ranks = job_from_fields(spec["job"]), Ranks(**spec["ranks"])
    os.environ.update(job.env)
    device = rank_device(job.device)
    team = _join(device, ranks)
    cfg = run_config_from_dict(spec["run"])
    try:
        if team.rank == 0:
            from harness.driver import eval_only, run_one

            if cfg.train_tasks:
                record = run_one(cfg, job.out, device, job.progress, job.command, not job.force, job.save,
                                 job.report_to)
            else:
                record = eval_only(cfg, job.out, device, job.progress)
            return 0 if record.get("status") == "ok" else 3
        from harness.distributed.follower import follow

        follow(cfg, team)
        return 0
    except Exception:  # noqa: BLE001 - a follower's failure: said here, recorded by rank 0 or settle
        traceback.print_exc()
        return 1
    finally:
        torch.distributed.destroy_process_group()


def _perf_rank(spec: dict[str, Any]) -> int:
    """``bench perf --nproc N``: every rank measures (``harness.perf.timing``, which takes the
    slowest rank's step times); rank 0 writes the result where ``spec["result"]`` says."""
    import dataclasses

    from harness.distributed.launch import Ranks
    from harness.perf.timing import measure, perf_config_from_dict, write_json

    cfg = perf_config_from_dict(spec["perf"])
    device = rank_device(cfg.device)
    team = _join(device, Ranks(**spec["ranks"]))
    try:
        result = measure(dataclasses.replace(cfg, device=str(device)), progress=False,
                         profile_steps=spec.get("profile_steps", 0))
        if team.rank == 0:
            write_json(result, Path(spec["result"]))
        return 0
    finally:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
