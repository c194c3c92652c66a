"""Executors: one sweep (2 methods x 2 tasks x 2 seeds on tiny-llama) on the local executor with a
worker killed mid-sweep and resubmitted, then on Ray and on submitit's local executor: the same
run folders and the same tidy table wherever the runs executed (timing and memory aside)."""
from __future__ import annotations

import importlib.util
import json
import signal
import sys
import threading
import time

import pandas as pd
import psutil
import pytest

from harness import cli

SWEEP = """
model: tiny-llama
methods: [lora, full]
tasks: [synthetic, arc_e]
per_task: true
seeds: [0, 1]
retention: none
budget: {max_steps: 2, eval_limit: 6, eval_batch_size: 8}
"""
MACHINE_DEPENDENT = {"s", "tokens/s"}  # timing units; memory figures are the *rss* / *mem* metrics


def _statuses(out):
    found = {}
    for path in out.glob("runs/*/run.json"):
        try:
            found[path.parent.name] = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            pass  # being replaced right now
    return found


def _kill_a_worker(out, stop):
    """Once a run has finished and the next one is running, SIGKILL the worker process running it."""
    while not stop.is_set():
        states = [rec.get("status") for rec in _statuses(out).values()]
        if "running" in states and "ok" in states:
            servers = [p for p in psutil.Process().children() if "forkserver" in " ".join(p.cmdline())]
            workers = [w for server in servers for w in server.children()]  # CPU workers fork from it
            for worker in workers:
                worker.send_signal(signal.SIGKILL)
            if workers:
                return
        time.sleep(0.02)


def _comparable(out):
    df = pd.read_csv(out / "results.csv")
    df = df[~df.unit.isin(MACHINE_DEPENDENT) & ~df.metric.str.contains("rss|mem")]
    return df.sort_values(["run_id", "task", "phase", "metric"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    """The sweep on the local executor: a worker killed, a resubmission, a retry of the failed run."""
    root = tmp_path_factory.mktemp("local")
    path, out = root / "sweep.yaml", root / "out"
    path.write_text(SWEEP)
    argv = ["sweep", str(path), "--out", str(out), "--no-progress"]
    stop = threading.Event()
    watcher = threading.Thread(target=_kill_a_worker, args=(out, stop))
    watcher.start()
    try:
        first = cli.main(argv)
    finally:
        stop.set()
        watcher.join()
    after_kill = _statuses(out)
    again = cli.main(argv)  # default: ok and failed runs are skipped
    after_again = _statuses(out)
    retried = cli.main([*argv, "--retry-failed"])
    return {"path": path, "out": out, "codes": (first, again, retried), "after_kill": after_kill,
            "after_again": after_again, "final": _statuses(out)}


@pytest.mark.needs_data
@pytest.mark.slow  # a real worker process is killed mid-run and the grid resubmitted (~20 s)
def test_a_killed_worker_fails_its_run_and_a_resubmission_finishes_only_the_rest(local):
    assert local["codes"] == (1, 1, 0)
    after_kill = local["after_kill"]
    assert len(after_kill) == 8
    [killed] = [rid for rid, rec in after_kill.items() if rec["status"] != "ok"]
    assert after_kill[killed]["status"] == "failed" and after_kill[killed]["error"]["type"] == "WorkerDied"
    assert "signal 9" in after_kill[killed]["error"]["message"]
    assert local["after_again"] == after_kill  # without --retry-failed nothing was rerun
    final = local["final"]
    assert all(rec["status"] == "ok" for rec in final.values())
    for rid, rec in after_kill.items():
        if rid != killed:  # finished runs were not redone: same started time, same record
            assert final[rid]["started"] == rec["started"] and final[rid] == rec


@pytest.mark.slow
@pytest.mark.needs_data
@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray not installed (pip install 'peft-bench[ray]')")
def test_ray_gives_the_same_runs_and_table_as_local(local, tmp_path, monkeypatch):
    import ray

    # Ray kills workers when the *machine* runs low on memory; other jobs on a shared CI host must not count
    monkeypatch.setenv("RAY_memory_monitor_refresh_ms", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=100 * 2**20)
    try:
        code = cli.main(["sweep", str(local["path"]), "--out", str(tmp_path), "--executor", "ray", "--no-progress"])
    finally:
        ray.shutdown()
    assert code == 0
    assert set(_statuses(tmp_path)) == set(local["final"])
    pd.testing.assert_frame_equal(_comparable(tmp_path), _comparable(local["out"]))


@pytest.mark.slow
@pytest.mark.needs_data
@pytest.mark.skipif(importlib.util.find_spec("submitit") is None,
                    reason="submitit not installed (pip install 'peft-bench[slurm]')")
def test_slurm_via_submitit_writes_the_same_run_folders(local, tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text(SWEEP.replace("[lora, full]", "[lora]").replace("[synthetic, arc_e]", "[synthetic]")
                    .replace("seeds: [0, 1]", "seeds: [1]"))
    out = tmp_path / "out"
    code = cli.main(["sweep", str(path), "--out", str(out), "--executor", "slurm", "--slurm-cluster", "local",
                     "--slurm-time", "10", "--no-progress"])
    assert code == 0
    runs = _statuses(out)
    assert len(runs) == 1 and set(runs) <= set(local["final"])
    mine = _comparable(out)
    # the local table also holds full-FT rows (no r): its csv reads r as float, this one as int
    pd.testing.assert_frame_equal(mine, _comparable(local["out"]).query("run_id in @runs").reset_index(drop=True),
                                  check_dtype=False)
    assert any((out / "slurm").iterdir())  # submitit's job folders


def test_a_missing_extra_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    path = tmp_path / "sweep.yaml"
    path.write_text(SWEEP)
    assert cli.main(["sweep", str(path), "--out", str(tmp_path), "--executor", "ray"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'peft-bench[ray]'" in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


def test_ray_reserves_a_gpu_per_rank_or_a_core_per_rank():
    from harness.executors.ray_cluster import reservation

    assert reservation(cpus_per_run=1, nproc=1, gpu=True) == (1, 1)
    assert reservation(cpus_per_run=1, nproc=4, gpu=True) == (1, 4)
    assert reservation(cpus_per_run=1, nproc=2, gpu=False) == (2, 0)
    assert reservation(cpus_per_run=8, nproc=2, gpu=False) == (8, 0)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("submitit") is None,
                    reason="submitit not installed (pip install 'peft-bench[slurm]')")
def test_slurm_runs_one_task_per_rank(tmp_path):
    """--nproc 2 on the Slurm executor: one job of two tasks (srun's role played by submitit's local
    executor), rank 0 writing the record of a 2-process run."""
    out = tmp_path / "out"
    code = cli.main(["run", "--model", "tiny-llama", "--tasks", "synthetic", "--methods", "lora", "--max-steps", "3",
                     "--eval-limit", "4", "--set", "eval_batch_size=4", "--retention", "none", "--no-progress",
                     "--device", "cpu", "--out", str(out), "--nproc", "2", "--executor", "slurm",
                     "--slurm-cluster", "local", "--slurm-time", "10"])
    assert code == 0
    [run] = (out / "runs").iterdir()
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "ok" and record["distributed"]["world_size"] == 2
    [job] = [d for d in (out / "slurm").iterdir() if any(d.iterdir())]
    assert sorted(p.name.split("_")[1] for p in job.glob("*_log.out")) == ["0", "1"]  # a task per rank
