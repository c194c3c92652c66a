"""Phase names and the figures catalogue under their long-standing import path.

The definitions live in ``harness.schema.phases`` and ``harness.schema.figures``; this module
only re-exports them, so ``from harness import metrics`` and ``metrics.BEFORE`` /
``metrics.get("acc")`` keep working everywhere.
"""
from __future__ import annotations

from harness.schema.figures import (CATALOGUE, CLOCK_FIGURES, EFFICIENCY, GIB, MIB, PEAK, PEAK_MEMORY,  # noqa: F401
                                    SEQUENTIAL, Format, Metric, UnknownFigure, check, columns, fixed, get,
                                    human_count, names, peak_memory_figure, significant, task_metric, unit)
from harness.schema.phases import AFTER, BEFORE, EVAL, TRAIN, VAL, final_phase, stage, stage_number  # noqa: F401
