"""Starting one run's ranks with PyTorch's elastic launcher, after checking they can start.

``bench run/eval/sweep --nproc N [--nnodes M --rdzv-endpoint HOST:PORT]``: the executor hands a
run to ``run_ranks``, which writes the run's settings to a file and starts
``python -m torch.distributed.run`` (what ``torchrun`` is) with ``harness.distributed.worker``
as the program of every rank. The launcher ends every rank when one fails (``--max-restarts 0``:
a failed run is recorded, not retried) and dies with ``bench``; each rank dies with the launcher
(``lifeline``), so nothing is left behind. On one machine the rendezvous is on 127.0.0.1 at a
free port; on several, every machine runs the same command with the same ``--rdzv-endpoint``.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

BACKENDS = ("auto", "gloo", "nccl")
DEFAULT_TIMEOUT_S = 600.0  # a training collective waiting longer than this fails the run (a hung rank)


@dataclass(frozen=True)
class Ranks:
    """How many processes one run uses: ``nproc`` per machine on ``nnodes`` machines."""

    nproc: int = 1
    nnodes: int = 1
    rdzv_endpoint: str | None = None  # HOST:PORT of the rendezvous; None on one machine: 127.0.0.1, a free port
    backend: str = "auto"  # nccl on CUDA, gloo on CPU
    timeout_s: float = DEFAULT_TIMEOUT_S
    shard: bool = False  # --shard: the model under FSDP2 (harness.distributed.shard)

    @property
    def world_size(self) -> int:
        return self.nproc * self.nnodes

    @property
    def several(self) -> bool:
        return self.world_size > 1


def check(ranks: Ranks, device: str, here: bool = True) -> None:
    """Refuse, in one line and before anything starts, ranks that cannot run: bad values, and with
    ``here`` (the runs execute on this machine) more ranks than its GPUs or cores."""
    import torch

    from harness.config import ConfigError
    from harness.environment import pick_device

    if ranks.nproc < 1 or ranks.nnodes < 1:
        raise ConfigError(f"--nproc {ranks.nproc} --nnodes {ranks.nnodes}: both must be at least 1")
    if ranks.backend not in BACKENDS:
        raise ConfigError(f"--dist-backend {ranks.backend!r}; valid: {', '.join(BACKENDS)}")
    if ranks.timeout_s <= 0:
        raise ConfigError(f"--dist-timeout {ranks.timeout_s}: must be positive")
    if not ranks.several:
        return
    if ranks.nnodes > 1 and not ranks.rdzv_endpoint:
        raise ConfigError(f"--nnodes {ranks.nnodes} needs --rdzv-endpoint HOST:PORT (a machine every node reaches)")
    if ranks.rdzv_endpoint and not _endpoint_ok(ranks.rdzv_endpoint):
        raise ConfigError(f"--rdzv-endpoint {ranks.rdzv_endpoint!r}: expected HOST:PORT")
    if not here:
        return
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if ranks.backend == "nccl" and not torch.cuda.is_available():
        raise ConfigError("--dist-backend nccl needs CUDA, which this torch does not see; use gloo (CPU)")
    if cuda:
        pick_device(device)  # its own one-line errors
        if ranks.nproc > torch.cuda.device_count():
            raise ConfigError(f"--nproc {ranks.nproc}: this machine has {torch.cuda.device_count()} GPU(s); "
                              "one rank per GPU")
        if ranks.backend == "gloo":
            raise ConfigError("--dist-backend gloo with CUDA: use nccl (or --device cpu)")
    elif ranks.nproc > (os.cpu_count() or 1):
        raise ConfigError(f"--nproc {ranks.nproc}: this machine has {os.cpu_count()} CPU core(s); "
                          "at most one rank per core")


def check_shard(ranks: Ranks, methods: list[str]) -> None:
    """``--shard`` needs several processes and methods whose spec is ``shardable``."""
    if not ranks.shard:
        return
    from harness.config import ConfigError
    from methods import registry

    if not ranks.several:
        raise ConfigError("--shard shards the model over several processes: add --nproc 2 (or more)")
    refused = sorted({m for m in methods if not registry.get(m).shardable})
    if refused:
        valid = sorted(n for n in registry.names() if registry.get(n).shardable)
        raise ConfigError(f"--shard runs {', '.join(valid)}; not {', '.join(refused)}")


def check_shares(ranks: Ranks, micro_batch_sizes: list[int]) -> None:
    """Every micro-batch must split evenly over the ranks (each takes the same number of rows)."""
    bad = sorted({m for m in micro_batch_sizes if m % ranks.world_size})
    if ranks.several and bad:
        from harness.config import ConfigError

        raise ConfigError(f"micro-batches of {bad[0]} examples cannot be shared by {ranks.world_size} processes: "
                          f"set batch_size (or micro_batch_size) to a multiple of {ranks.world_size}")


def backend_for(ranks: Ranks, device_type: str) -> str:
    return ranks.backend if ranks.backend != "auto" else ("nccl" if device_type == "cuda" else "gloo")


def _endpoint_ok(endpoint: str) -> bool:
    host, _, port = endpoint.rpartition(":")
    return bool(host) and port.isdigit()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(ranks: Ranks, run_file: Path, run_id: str) -> list[str]:
    """The launcher's command line for one run."""
    endpoint = ranks.rdzv_endpoint or f"127.0.0.1:{free_port()}"
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={ranks.nproc}",
            f"--nnodes={ranks.nnodes}", "--rdzv-backend=c10d", f"--rdzv-endpoint={endpoint}",
            f"--rdzv-id={run_id}", "--max-restarts=0", "--monitor-interval=0.5",
            "-m", "harness.distributed.worker", str(run_file)]


def rank_env(ranks: Ranks) -> dict[str, str]:
    """The ranks' environment: one rank's share of the CPU threads, loopback for gloo on one machine."""
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // ranks.nproc)))
    if ranks.nnodes == 1:
        env.setdefault("GLOO_SOCKET_IFNAME", _loopback())
    env["PYTHONPATH"] = os.pathsep.join(p for p in [str(Path(__file__).resolve().parents[2]),
                                                     env.get("PYTHONPATH", "")] if p)
    return env


def _loopback() -> str:
    names = [name for _, name in socket.if_nameindex()] if hasattr(socket, "if_nameindex") else []
    return "lo" if "lo" in names or not names else names[0]


def run_ranks(spec: dict[str, Any], ranks: Ranks, name: str, timeout_s: float | None = None) -> str:
    """Start the ranks of ``spec`` (``harness.distributed.worker``: a run, or ``bench perf``'s
    measurement) through torch.distributed.run and wait for them; returns how they ended, in words
    ("" when every rank exited 0). Interrupted (Ctrl-C), every rank is ended first."""
    from harness.executors.lifeline import die_with_parent

    with tempfile.TemporaryDirectory(prefix="peft-bench-ranks-") as tmp:
        run_file = Path(tmp) / "run.json"
        run_file.write_text(json.dumps({**spec, "ranks": asdict(ranks)}))
        proc = subprocess.Popen(command(ranks, run_file, name), env=rank_env(ranks), start_new_session=True,
                                preexec_fn=die_with_parent)
        try:
            code = proc.wait(timeout=timeout_s)
        except BaseException:  # Ctrl-C, or the caller's timeout: no rank outlives the run
            _end(proc)
            raise
    if code == 0:
        return ""
    return f"torch.distributed.run ended with {f'signal {-code}' if code < 0 else f'exit code {code}'}"


def _end(proc: subprocess.Popen) -> None:
    """Ask the launcher's session to stop, then kill what is left of it."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
