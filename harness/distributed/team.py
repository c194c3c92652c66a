"""The collectives of one data-parallel run, issued and counted in one place.

Data parallelism with the same global batch (harness/MEASUREMENT.md, "Several processes"):
``batch_size`` stays the global batch and the micro-batches are those of a one-process run.
Rank ``r`` of ``W`` takes the contiguous rows ``[r*m/W, (r+1)*m/W)`` of every micro-batch of
``m`` examples (padded to the same width as in one process). A one-process step's gradient is
``sum over micro-batches of mean-token-loss / n_micro``; so that the data-parallel gradient is
the same sum, rank ``r`` back-propagates ``W * (its tokens' summed loss) / (the micro-batch's
tokens)`` and the gradients are summed across ranks and divided by ``W`` (an average, as
``DistributedDataParallel`` does). The gradients a method needs reduced are what
``Adapted.sync_tensors`` returns (every trainable gradient by default; LoSiA's subnet blocks),
all-reduced in buckets of ``BUCKET_BYTES``. With ``--shard`` the model is under FSDP2 instead
(``harness.distributed.shard``), whose reduce-scatter averages the gradients.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Iterable

import torch
import torch.distributed as dist

from methods.base import Adapted

BUCKET_BYTES = 25 * 2**20  # DistributedDataParallel's default bucket_cap_mb
IGNORE_INDEX = -100  # labels that carry no loss (transformers' causal-LM loss)


class RanksDiverged(RuntimeError):
    """The ranks' weights differ at the end of a data-parallel run: its figures are not one run's."""


@dataclass
class Team:
    """This process's place in a run of ``world_size`` processes over ``nodes`` machines."""

    rank: int
    world_size: int
    nodes: int
    backend: str
    device: torch.device
    group: Any = None  # the training collectives' group (shorter timeout than the default group)
    comm_bytes: int = 0  # bytes passed to collectives since ``take_comm_bytes``
    bucket_bytes: int = BUCKET_BYTES
    shard: bool = False  # --shard: the adapted model under FSDP2 (harness.distributed.shard)

    @classmethod
    def from_environment(cls, device: torch.device, nodes: int, timeout_s: float, backend: str,
                         shard: bool = False) -> "Team":
        """Join the process group torch.distributed.run described in this process's environment."""
        if not dist.is_initialized():
            # the default group waits on rank 0's evaluations (hours); training collectives time out sooner
            dist.init_process_group(backend, timeout=timedelta(hours=24))
        group = dist.new_group(backend=backend, timeout=timedelta(seconds=timeout_s))
        return cls(dist.get_rank(), dist.get_world_size(), nodes, backend, device, group, shard=shard)

    def start_from_rank0(self, adapted: Adapted, seed: int) -> None:
        """After ``adapt``: every rank takes rank 0's trainable parameters (as
        DistributedDataParallel does when it wraps a model), on the default group, which waits for
        rank 0's evaluations before training; then each rank seeds its own random stream (dropout
        masks are drawn per rank: with dropout a run on W ranks is another draw of the same
        training, not the one-process trajectory). With ``shard``, the model is then sharded."""
        with torch.no_grad():
            for p in adapted.params:
                dist.broadcast(p.data, 0)
        if self.shard:
            from harness.distributed.shard import shard

            shard(adapted, self.device, self.world_size, self.count)
        torch.manual_seed(seed + 7919 * self.rank)

    # -- evaluation: rank 0 says what to evaluate, every rank scores some batches -----------------
    def instruct(self, instruction: Any) -> None:
        """Rank 0: tell the other ranks what comes next (``follower.serve`` executes it); on the
        default group, so ranks wait for it as long as rank 0 works alone."""
        dist.broadcast_object_list([instruction], src=0)

    def receive(self) -> Any:
        """A rank other than 0: the next instruction from rank 0."""
        box: list[Any] = [None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def mine(self, count: int) -> range:
        """``tasks.sharing``: of ``count`` evaluation batches, this rank scores ``r, r+W, r+2W, ...``
        (they are sorted by length, so the ranks' work is balanced)."""
        return range(self.rank, count, self.world_size)

    def gather(self, part: list[Any]) -> list[Any]:
        """``tasks.sharing``: every rank's evaluation results, in rank order, on every rank."""
        parts: list[Any] = [None] * self.world_size
        dist.all_gather_object(parts, part)
        return [x for p in parts for x in p]

    # -- each rank's share of a step ------------------------------------------------------------
    def share(self, micro_batch: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], float]:
        """This rank's rows of ``micro_batch`` and the factor its mean loss is multiplied by, so that
        the gradients summed over ranks and divided by ``W`` are the one-process gradient."""
        rows = micro_batch["input_ids"].shape[0]
        if rows % self.world_size:
            raise ValueError(f"a micro-batch of {rows} examples cannot be shared by {self.world_size} ranks")
        per = rows // self.world_size
        part = {k: v[self.rank * per:(self.rank + 1) * per] for k, v in micro_batch.items()}
        total = _loss_tokens(micro_batch["labels"])
        mine = _loss_tokens(part["labels"])
        return part, (self.world_size * mine / total if total else 0.0)

    # -- collectives inside the optimizer step (counted in comm_bytes_per_step) ------------------
    def sync_gradients(self, adapted: Adapted) -> None:
        """Average the tensors ``adapted.sync_tensors()`` names across ranks, in place, in buckets
        (sharded: FSDP's reduce-scatter has averaged them during the backward)."""
        if self.shard:
            return
        for bucket in _buckets(adapted.sync_tensors(), self.bucket_bytes):
            flat = torch.cat([t.reshape(-1) for t in bucket]) if len(bucket) > 1 else bucket[0].reshape(-1)
            self._all_reduce(flat)
            flat.div_(self.world_size)
            if len(bucket) > 1 or flat.data_ptr() != bucket[0].data_ptr():
                offset = 0
                for t in bucket:
                    t.copy_(flat[offset:offset + t.numel()].view_as(t))
                    offset += t.numel()

    def global_loss(self, local: torch.Tensor) -> torch.Tensor:
        """The step's loss over the global batch (every rank gets the same value, so a NaN stops
        every rank at the same step)."""
        total = local.detach().float().reshape(1).clone()
        self._all_reduce(total)
        return total[0] / self.world_size

    def take_comm_bytes(self) -> int:
        """Bytes passed to collectives since the last call (the trainer calls it once per step)."""
        taken, self.comm_bytes = self.comm_bytes, 0
        return taken

    def count(self, nbytes: int) -> None:
        """Add ``nbytes`` passed to a collective to this step's ``comm_bytes`` (where it is issued)."""
        self.comm_bytes += nbytes

    def _all_reduce(self, tensor: torch.Tensor, op: dist.ReduceOp = dist.ReduceOp.SUM) -> None:
        self.count(tensor.numel() * tensor.element_size())
        dist.all_reduce(tensor, op=op, group=self.group)

    # -- bookkeeping collectives (outside the timed step; not in comm_bytes_per_step) -----------
    def largest(self, figures: dict[str, float]) -> dict[str, float]:
        """Each figure's largest value over the ranks (step time: the slowest rank; memory: the
        largest). Every rank must pass the same keys."""
        if not figures:
            return figures
        keys = sorted(figures)
        values = torch.tensor([float(figures[k]) for k in keys], dtype=torch.float64, device=self._collective_device)
        dist.all_reduce(values, op=dist.ReduceOp.MAX, group=self.group)
        return {k: type(figures[k])(v) for k, v in zip(keys, values.tolist())}

    def check_same(self, adapted: Adapted) -> list[str]:
        """Compare a checksum of every rank's trained state; raise ``RanksDiverged`` when they differ.
        Returns the digests, rank by rank."""
        digests: list[str | None] = [None] * self.world_size
        dist.all_gather_object(digests, state_digest(adapted.state_dict()), group=self.group)
        if len(set(digests)) > 1:
            differ = [r for r, d in enumerate(digests) if d != digests[0]]
            raise RanksDiverged(f"ranks {differ} hold weights that differ from rank 0's after training "
                                f"(checksums {', '.join(str(d)[:12] for d in digests)})")
        return [str(d) for d in digests]

    @property
    def _collective_device(self) -> torch.device:
        return self.device if self.backend == "nccl" else torch.device("cpu")

    def describe(self) -> dict[str, Any]:
        """What run.json records of the team."""
        return {"world_size": self.world_size, "nodes": self.nodes, "backend": self.backend,
                "share": "contiguous rows of every micro-batch", "bucket_bytes": self.bucket_bytes,
                "shard": self.shard}


def _loss_tokens(labels: torch.Tensor) -> int:
    """Positions the causal-LM loss averages over: labels shifted by one, ignored ones left out."""
    return int((labels[:, 1:] != IGNORE_INDEX).sum())


def _buckets(tensors: Iterable[torch.Tensor], cap: int) -> list[list[torch.Tensor]]:
    """Consecutive tensors of one dtype and device, at most ``cap`` bytes a bucket (one tensor
    larger than ``cap`` is a bucket of its own)."""
    out: list[list[torch.Tensor]] = []
    size = 0
    for t in tensors:
        nbytes = t.numel() * t.element_size()
        last = out[-1] if out else None
        if last is None or size + nbytes > cap or last[0].dtype != t.dtype or last[0].device != t.device:
            out.append([t])
            size = nbytes
        else:
            last.append(t)
            size += nbytes
    return out


def state_digest(state: Any) -> str:
    """sha256 over every tensor of a (nested) state dict, in key order, and its other values."""
    digest = hashlib.sha256()

    def feed(key: str, value: Any) -> None:
        if isinstance(value, dict):
            for k in sorted(value, key=str):
                feed(f"{key}.{k}", value[k])
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                feed(f"{key}[{i}]", v)
        elif isinstance(value, torch.Tensor):
            local = value.full_tensor() if hasattr(value, "full_tensor") else value
            digest.update(key.encode())
            digest.update(local.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        else:
            digest.update(f"{key}={value!r}".encode())

    feed("", state)
    return digest.hexdigest()


def end_of_training(team: Team, adapted: Adapted, probe: Any) -> dict[str, Any]:
    """What every rank does once its last stage is trained, in the same order on every rank: the
    memory figures become the largest rank's (``probe.figures``, in place), and the ranks' weights
    are compared (``RanksDiverged`` when they differ); a sharded model gathers its full weights on
    every rank for the evaluations and the saving. Returns what run.json records of the team."""
    probe.figures.update(team.largest(probe.figures))
    checksums = team.check_same(adapted)
    if team.shard:
        from harness.distributed.shard import unshard_for_eval

        unshard_for_eval(adapted.model)
    return {**team.describe(), "checksums": checksums}
