"""``python -m harness.distributed.worker RUN_FILE``: one rank of a run, as torch.distributed.run
starts it (``launch.run_ranks``; under Slurm, ``srun`` starts it once per rank).

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


def slurm_environment() -> None:
    """Under ``srun`` (one task per rank, no launcher): torch.distributed's variables from Slurm's."""
    if "RANK" in os.environ or "SLURM_PROCID" not in os.environ:
        return
    os.environ.update(RANK=os.environ["SLURM_PROCID"], WORLD_SIZE=os.environ["SLURM_NTASKS"],
                      LOCAL_RANK=os.environ.get("SLURM_LOCALID", "0"))


def main(argv: list[str]) -> int:
    from harness import distributed
    from harness.config import run_config_from_dict
    from harness.distributed.launch import Ranks, backend_for
    from harness.distributed.team import Team
    from harness.executors.base import job_from_fields
    from harness.executors.lifeline import die_with_parent

    die_with_parent(os.getppid())  # the launcher: a rank never outlives it
    spec: dict[str, Any] = json.loads(Path(argv[0]).read_text())
    job, ranks = job_from_fields(spec["job"]), Ranks(**spec["ranks"])
    os.environ.update(job.env)
    slurm_environment()
    device = rank_device(job.device)
    team = Team.from_environment(device, ranks.nnodes, ranks.timeout_s, backend_for(ranks, device.type))
    distributed.join(team)
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


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
