"""Phase names: when an evaluation was taken.

``before`` training, ``after`` it, after stage k of a ``--sequence`` (``stage-k``), on held-out
training items for lr selection (``val``), or in a model-only ``bench eval`` (``eval``); costs are
phase ``train``. Records, tables, plots and the CLI build and parse phase names only through
this module (re-exported by ``harness.metrics``), so the spelling lives in one place.
"""
from __future__ import annotations

from typing import Iterable

BEFORE = "before"
AFTER = "after"
EVAL = "eval"
VAL = "val"
TRAIN = "train"
_STAGE_PREFIX = "stage-"


def stage(k: int) -> str:
    """The phase after stage ``k`` (1-based) of a sequence: ``stage(3) == "stage-3"``."""
    if k < 1:
        raise ValueError(f"stages are numbered from 1, got {k}")
    return f"{_STAGE_PREFIX}{k}"


def stage_number(phase: str) -> int | None:
    """``"stage-3"`` -> 3; None for any other phase."""
    text = str(phase)
    num = text[len(_STAGE_PREFIX):]
    return int(num) if text.startswith(_STAGE_PREFIX) and num.isdigit() else None


def final_phase(phases: Iterable[str]) -> str:
    """The phase that holds a run's final scores: its last stage, else ``after``, else ``eval``."""
    phases = set(phases)
    stages = [n for n in map(stage_number, phases) if n is not None]
    if stages:
        return stage(max(stages))
    return AFTER if AFTER in phases or not phases else EVAL
