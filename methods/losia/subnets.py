"""Subnets as data: the ``init_subnets`` file that fixes the initial ones, and ``subnets.jsonl``.

Both use the weights' ``state_dict`` names and plain index lists, so that two runs (ours, or
ours and a trajectory recorded from the authors' release) can be started from the same subnets
and compared subnet by subnet.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from methods.base import Artifacts, MethodConfigError

LOG_NAME = "subnets.jsonl"
Indices = tuple[list[int], list[int]]


def _bad(path: str, what: str) -> MethodConfigError:
    return MethodConfigError(f"init_subnets {path}: {what}")


def read_init_file(path: str) -> dict[str, Indices]:
    """``{weight name: (rows, cols)}`` from the JSON file; checks what needs no model."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise _bad(path, "no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise _bad(path, f"not readable JSON ({err})") from None
    if not isinstance(data, dict):
        raise _bad(path, "expected an object {weight name: [rows, cols]}")
    out: dict[str, Indices] = {}
    for name, value in data.items():
        if not (isinstance(value, list) and len(value) == 2
                and all(isinstance(v, list) and all(type(i) is int for i in v) for v in value)):
            raise _bad(path, f"{name}: expected [rows, cols], two lists of integers")
        rows, cols = value
        for axis, idx in (("rows", rows), ("cols", cols)):
            if len(set(idx)) != len(idx):
                raise _bad(path, f"{name}: {axis} repeat an index")
        out[name] = (rows, cols)
    return out


def check_init(path: str, given: dict[str, Indices], targets: dict[str, tuple[tuple[int, int], tuple[int, int]]]
               ) -> None:
    """Refuse a file that does not give every target exactly its subnet's shape, in range.

    ``targets`` maps each target weight's name to (weight shape, block shape).
    """
    missing = [n for n in targets if n not in given]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise _bad(path, f"no subnet for target weight {missing[0]}{more}")
    extra = [n for n in given if n not in targets]
    if extra:
        raise _bad(path, f"{extra[0]} is not a target weight of this model (targets are e.g. {next(iter(targets))})")
    for name, (shape, block) in targets.items():
        for axis, idx, dim, want in (("rows", given[name][0], shape[0], block[0]),
                                     ("cols", given[name][1], shape[1], block[1])):
            if len(idx) != want:
                raise _bad(path, f"{name}: {len(idx)} {axis}, its subnet has {want}")
            if idx and not 0 <= min(idx) <= max(idx) < dim:
                bad = next(i for i in idx if not 0 <= i < dim)
                raise _bad(path, f"{name}: {axis} index {bad} out of range [0, {dim})")


def as_index(indices: list[int]) -> torch.Tensor:
    """A sorted index tensor (Adam is elementwise: a block's order does not change the training)."""
    return torch.tensor(sorted(indices), dtype=torch.long)


class SubnetLog:
    """Appends one JSON line per selected subnet to the run folder's ``subnets.jsonl`` (through the
    run's ``Artifacts``; a no-op without a run folder)."""

    def __init__(self, artifacts: Artifacts | None) -> None:
        self.artifacts = artifacts

    def write(self, step: int, selections: list[tuple[str, torch.Tensor, torch.Tensor]]) -> None:
        if self.artifacts is None or not selections:
            return
        lines: list[dict[str, Any]] = [{"step": step, "weight": name, "rows": rows.tolist(), "cols": cols.tolist()}
                                       for name, rows, cols in selections]
        self.artifacts.append(LOG_NAME, [json.dumps(line) for line in lines])
