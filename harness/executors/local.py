"""Run each run in a fresh worker process (clean memory figures; a crash cannot end the grid).

``inline`` runs in the calling process instead: faster to start, used by tests and debugging,
but its RSS figures include whatever the process held before.
"""
from __future__ import annotations

import multiprocessing as mp
from pathlib import Path
from typing import Any

from harness import records
from harness.config import RunConfig, run_config_from_dict


def _worker(resolved: dict[str, Any], out: str, device: str, progress: bool, command: str | None) -> None:
    import torch

    from harness.driver import run_one

    record = run_one(run_config_from_dict(resolved), Path(out), torch.device(device), progress, command)
    raise SystemExit(0 if record["status"] == "ok" else 3)


def run_inline(cfg: RunConfig, out: Path, device: str, progress: bool, command: str | None = None) -> dict[str, Any]:
    import torch

    from harness.driver import run_one

    return run_one(cfg, out, torch.device(device), progress, command)


def run_in_worker(cfg: RunConfig, out: Path, device: str, progress: bool, command: str | None = None) -> dict[str, Any]:
    proc = mp.get_context("spawn").Process(target=_worker, args=(cfg.resolved(), str(out), device, progress, command))
    proc.start()
    proc.join()
    path = records.run_dir(out, cfg.run_id) / "run.json"
    record = records.read_json(path) if path.exists() else {"run_id": cfg.run_id, "config": cfg.resolved()}
    if record.get("status") not in ("ok", "failed"):
        # the worker died without recording (killed, out of memory, segfault): record it now
        how = f"signal {-proc.exitcode}" if (proc.exitcode or 0) < 0 else f"exit code {proc.exitcode}"
        record.update(status="failed", error={"type": "WorkerDied", "message": f"worker process ended with {how}"})
        records.atomic_write_json(path, record)
    return record


EXECUTORS = {"local": run_in_worker, "inline": run_inline}
