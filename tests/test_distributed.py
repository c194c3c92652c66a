"""One run on two CPU processes (gloo, torch.distributed.run) equals the same run on one.

Each method is trained twice on tiny-llama, ``--max-steps 6 --batch-size 8 --save adapter``: in
this process (``--executor inline``) and with ``--nproc 2``. The saved trainable weights must
agree within 1e-5 (max abs; relative to the weights' scale for full fine-tuning, which saves whole
matrices), the per-step losses within 1e-5, LoSiA's ``subnets.jsonl`` exactly. Dropout is set
to 0: dropout masks are drawn per rank (harness.distributed.team), so with dropout the two runs
are two draws of the same training, not one trajectory.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
import torch
from safetensors.torch import load_file

from harness import cli, records
from harness.distributed.team import Team, _buckets
from tasks.sharing import in_batch_order

TOL = 1e-5
BASE = ["run", "--model", "tiny-llama", "--tasks", "synthetic", "--max-steps", "6", "--set", "batch_size=8",
        "--save", "adapter", "--eval-limit", "4", "--retention", "none", "--no-progress", "--device", "cpu",
        "--set", "eval_batch_size=4"]
NO_DROPOUT = {"lora": ["lora.lora_dropout=0"], "dora": ["dora.lora_dropout=0"],
              "localized-lora": ["localized-lora.dropout=0"], "sensitivity-lora": ["sensitivity-lora.lora_dropout=0"]}
METHODS = ["lora", "dora", "full", "galore", "losia", "losia-pro", "localized-lora", "sensitivity-lora", "peft:ia3"]

needs_two_cores = pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="two ranks need two CPU cores")


def train(out: Path, method: str, *extra: str) -> Path:
    """Run ``method`` into ``out``; returns its run folder."""
    sets = [arg for s in NO_DROPOUT.get(method, []) for arg in ("--set", s)]
    assert cli.main([*BASE, "--methods", method, "--out", str(out), *sets, *extra]) == 0
    [folder] = (out / "runs").iterdir()
    assert records.read_run(folder / "run.json")["status"] == "ok"
    return folder


def saved_weights(folder: Path) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for f in sorted((folder / "adapter").rglob("*.safetensors")):
        tensors.update({f"{f.name}:{k}": v for k, v in load_file(f).items()})
    assert tensors, f"nothing saved in {folder / 'adapter'}"
    return tensors


def weight_difference(one: dict[str, torch.Tensor], two: dict[str, torch.Tensor], relative: bool) -> float:
    """Largest difference over the saved tensors (relative: over each tensor's largest magnitude)."""
    assert one.keys() == two.keys()
    worst = 0.0
    for k in one:
        diff = float((one[k].double() - two[k].double()).abs().max())
        scale = float(one[k].double().abs().max()) if relative else 1.0
        worst = max(worst, diff / scale if scale else diff)
    return worst


def losses(folder: Path) -> list[float]:
    return [s["loss"] for s in records.read_jsonl(folder / "steps.jsonl")]


@pytest.mark.slow
@needs_two_cores
@pytest.mark.parametrize("method", METHODS)
def test_two_processes_train_as_one(tmp_path, method):
    one = train(tmp_path / "one", method, "--executor", "inline")
    two = train(tmp_path / "two", method, "--nproc", "2")
    diff = weight_difference(saved_weights(one), saved_weights(two), relative=method == "full")
    assert len(losses(one)) == len(losses(two)) == 6
    loss_diff = max(abs(a - b) for a, b in zip(losses(one), losses(two)))
    print(f"{method}: max weight difference {diff:.3g}{' (relative)' if method == 'full' else ''}, "
          f"max loss difference {loss_diff:.3g}")
    assert diff <= TOL
    assert loss_diff <= TOL
    record = records.read_run(two / "run.json")
    assert record["distributed"]["world_size"] == 2
    for folder, size in ((one, 1), (two, 2)):
        table = pd.read_csv(folder.parents[1] / "results.csv")
        assert set(table.world_size) == {size} and set(table.nodes) == {1}
    assert record["costs"]["comm_bytes_per_step"][0] > 0 and "comm_bytes_per_step" not in records.read_run(
        one / "run.json")["costs"]
    assert len(set(record["distributed"]["checksums"])) == 1
    if method.startswith("losia"):
        assert (one / "subnets.jsonl").read_text() == (two / "subnets.jsonl").read_text()


@pytest.mark.slow
@needs_two_cores
@pytest.mark.parametrize("method", ["lora", "full"])
def test_two_sharded_processes_train_as_one(tmp_path, method):
    """``--shard`` (FSDP2): the same trajectory and saved weights as one process, the record says so."""
    one = train(tmp_path / "one", method, "--executor", "inline")
    two = train(tmp_path / "two", method, "--nproc", "2", "--shard")
    diff = weight_difference(saved_weights(one), saved_weights(two), relative=method == "full")
    loss_diff = max(abs(a - b) for a, b in zip(losses(one), losses(two)))
    print(f"{method} --shard: max weight difference {diff:.3g}{' (relative)' if method == 'full' else ''}, "
          f"max loss difference {loss_diff:.3g}")
    assert len(losses(two)) == 6 and diff <= TOL and loss_diff <= TOL
    record = records.read_run(two / "run.json")
    assert record["distributed"]["shard"] is True and len(set(record["distributed"]["checksums"])) == 1
    # FSDP gathers every weight in the forward and reduce-scatters every trained gradient (float32)
    costs = record["costs"]
    assert costs["comm_bytes_per_step"][0] >= 4 * (costs["total_params"][0] + costs["trainable_params"][0])


@pytest.mark.slow
@needs_two_cores
def test_evaluation_on_two_processes_writes_the_samples_of_one(tmp_path):
    argv = ["eval", "--model", "tiny-llama", "--tasks", "synthetic", "--eval-limit", "40", "--set", "eval_batch_size=8",
            "--no-progress", "--device", "cpu"]
    for n in (1, 2):
        assert cli.main([*argv, "--out", str(tmp_path / str(n)), "--nproc", str(n)]) == 0
    [one], [two] = (list((tmp_path / n).glob("runs/*/samples/eval/synthetic.jsonl")) for n in "12")
    assert len(records.read_jsonl(one)) == 40
    assert one.read_bytes() == two.read_bytes()
    assert records.read_run(two.parents[2] / "run.json")["distributed"]["world_size"] == 2


# -- the pieces, without processes ---------------------------------------------------------------

def test_shares_of_a_micro_batch_cover_it_and_weigh_the_loss_as_one_process():
    labels = torch.tensor([[-100, 5, 6, 7], [-100, -100, 8, -100], [1, 2, 3, 4], [-100, -100, -100, -100]])
    batch = {"input_ids": torch.arange(16).view(4, 4), "attention_mask": torch.ones(4, 4), "labels": labels}
    shares = [Team(r, 2, 1, "gloo", torch.device("cpu")).share(batch) for r in range(2)]
    assert torch.equal(torch.cat([part["labels"] for part, _ in shares]), labels)
    # loss tokens (labels shifted by one): rank 0 has 3 + 1, rank 1 has 3 + 0, of 7
    assert [weight for _, weight in shares] == [2 * 4 / 7, 2 * 3 / 7]
    with pytest.raises(ValueError, match="3 examples"):
        Team(0, 2, 1, "gloo", torch.device("cpu")).share({k: v[:3] for k, v in batch.items()})


def test_gradient_buckets_keep_order_dtype_and_size():
    tensors = [torch.zeros(10), torch.zeros(10), torch.zeros(30), torch.zeros(5, dtype=torch.float64), torch.zeros(2)]
    sizes = [[t.numel() for t in bucket] for bucket in _buckets(tensors, cap=100)]
    assert sizes == [[10, 10], [30], [5], [2]]


class _HalfShare:
    """Rank 0 of two: the odd batches are "the other rank's", computed here when gathered."""

    def __init__(self, compute):
        self.compute = compute

    def mine(self, count):
        return range(0, count, 2)

    def gather(self, part):
        return part + [(i, self.compute(i)) for i in range(1, 7, 2)]


def test_batches_shared_by_ranks_come_back_in_batch_order():
    def compute(i):
        return i * i

    assert in_batch_order(compute, 7, _HalfShare(compute)) == in_batch_order(compute, 7, None)


# -- refused before anything starts ------------------------------------------------------------

@pytest.mark.parametrize("extra, needles", [
    (["--nproc", "100000"], ["--nproc", "100000", "core"]),
    (["--nproc", "0"], ["--nproc", "0"]),
    (["--nproc", "2", "--dist-backend", "nccl"], ["nccl", "CUDA"]),
    (["--nproc", "2", "--nnodes", "2"], ["--rdzv-endpoint"]),
    (["--nproc", "2", "--nnodes", "2", "--rdzv-endpoint", "nohost"], ["HOST:PORT"]),
    (["--nproc", "2", "--set", "batch_size=3"], ["3 examples", "2 processes"]),
    (["--nproc", "2", "--sequence", "synthetic,synthetic"], ["--sequence"]),
    (["--shard"], ["--shard", "--nproc 2"]),
    (["--nproc", "2", "--shard", "--methods", "losia"], ["--shard", "losia"]),
])
def test_ranks_this_machine_cannot_run_are_one_line(tmp_path, capsys, extra, needles):
    from tests.test_faults import assert_one_line_error, bench

    if "nccl" in extra and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code, _, err = bench(capsys, *BASE, "--methods", "lora", "--out", tmp_path, *extra)
    assert_one_line_error(code, err, *needles)
    assert not (tmp_path / "runs").exists()


# -- a rank that dies --------------------------------------------------------------------------

def _signal_rank_one(out: Path, bench: psutil.Process, sig: int, killed: list[int], stop: threading.Event) -> None:
    """Once the first run has logged a step, send ``sig`` to its rank 1 (SIGKILL: as the OOM killer
    would; SIGSTOP: a hung rank)."""
    while not stop.is_set():
        if any(f.stat().st_size for f in out.glob("runs/*/steps.jsonl")):
            for proc in bench.children(recursive=True):
                try:
                    if proc.environ().get("LOCAL_RANK") == "1":
                        proc.send_signal(sig)
                        killed.append(proc.pid)
                        return
                except psutil.Error:
                    continue
        time.sleep(0.05)


@pytest.mark.slow
@needs_two_cores
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSTOP], ids=["killed", "hung"])
def test_a_dead_or_hung_rank_fails_its_run_within_a_minute_the_grid_goes_on_and_nothing_is_left(tmp_path, sig):
    """A hung rank is found by the training collectives' timeout (--dist-timeout 15 here)."""
    out = tmp_path / "out"
    base = [a if a != "adapter" else "none" for a in BASE]  # --save none
    argv = [sys.executable, "-m", "harness.cli", *base, "--methods", "lora,full", "--out", str(out),
            "--nproc", "2", "--set", "max_steps=80", "--dist-timeout", "15"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    bench = psutil.Process(proc.pid)
    killed: list[int] = []
    stop = threading.Event()
    watcher = threading.Thread(target=_signal_rank_one, args=(out, bench, sig, killed, stop))
    watcher.start()
    descendants: set[psutil.Process] = set()
    try:
        while proc.poll() is None and not killed:
            descendants.update(bench.children(recursive=True))
            time.sleep(0.05)
        descendants.update(_children(bench))
        t_kill = time.monotonic()
        first_done = _wait_for_status(out, "lora", t_kill + 60)
        elapsed = time.monotonic() - t_kill
        output, _ = proc.communicate(timeout=600)
    finally:
        stop.set()
        watcher.join()
        if proc.poll() is None:
            proc.kill()
    assert killed, output
    print(f"signal {sig} to rank 1 (pid {killed[0]}): run recorded failed after {elapsed:.1f} s")
    assert first_done == "failed", output
    assert elapsed < 60, f"the run was recorded failed after {elapsed:.0f} s"
    statuses = {records.read_run(f / "run.json")["config"]["method"]: records.read_run(f / "run.json")["status"]
                for f in (out / "runs").iterdir()}
    assert statuses == {"lora": "failed", "full": "ok"}, output
    left = [p for p in descendants if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not left, f"processes left behind: {[p.cmdline() for p in left]}"


def _children(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return proc.children(recursive=True)
    except psutil.Error:
        return []


def _wait_for_status(out: Path, method: str, deadline: float) -> str | None:
    """The status of ``method``'s run once it is ok or failed (None at the deadline)."""
    while time.monotonic() < deadline:
        for folder in out.glob("runs/*"):
            record = records.read_run(folder / "run.json") if (folder / "run.json").exists() else None
            if record and record["config"]["method"] == method and record["status"] in ("ok", "failed"):
                return record["status"]
        time.sleep(0.1)
    return None


def test_a_sweep_whose_batches_do_not_split_over_the_ranks_is_one_line(tmp_path, capsys):
    from tests.test_faults import assert_one_line_error, bench

    path = tmp_path / "sweep.yaml"
    path.write_text("model: tiny-llama\nmethods: [lora]\ntasks: [synthetic]\nbudget: {max_steps: 2}\n"
                    "set: {batch_size: 3}\n")
    code, _, err = bench(capsys, "sweep", path, "--nproc", "2", "--device", "cpu", "--out", tmp_path / "out")
    assert_one_line_error(code, err, "3 examples", "2 processes")
    assert not (tmp_path / "out" / "runs").exists()
