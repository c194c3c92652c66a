"""Evaluating on several processes: each computes some of the batches, everyone gets all results.

The scorers build their batches exactly as in one process, then compute the batch indices
``share.mine(count)`` names (``harness.distributed`` hands out batches ``r, r+W, r+2W, ...`` to
rank ``r``) and combine every rank's results in batch order: per-item results are those of one
process, bit for bit, whatever the number of processes (given the same device and threads).
"""
from __future__ import annotations

from typing import Any, Callable, Protocol, Sequence


class Sharing(Protocol):
    def mine(self, count: int) -> Sequence[int]:
        """The indices, out of ``count`` batches, this process computes."""

    def gather(self, part: list[Any]) -> list[Any]:
        """Every process's ``part``, concatenated in rank order (a collective: every process calls it)."""


def in_batch_order(compute: Callable[[int], Any], count: int, share: Sharing | None) -> list[tuple[int, Any]]:
    """``(i, compute(i))`` for every batch ``i`` in order; with ``share``, each process computes its
    own batches and the results of all are gathered."""
    if share is None:
        return [(i, compute(i)) for i in range(count)]
    part = [(i, compute(i)) for i in share.mine(count)]
    return sorted(share.gather(part), key=lambda pair: pair[0])
