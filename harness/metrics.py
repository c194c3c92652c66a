"""One definition of every figure the harness writes, and of every phase name.

The catalogue (``CATALOGUE``, read through ``get``) is to this project what lm-eval's
``register_metric(..., higher_is_better=...)`` is to lm-eval: each figure is registered once with
its unit, which way is better, its table header and display format, and a one-line definition
(harness/MEASUREMENT.md has the long form). Records take units from here, tables take headers,
formats and directions from here, so nothing downstream guesses a unit or a direction from a
metric's name.

A phase says when an evaluation was taken: ``before`` training, ``after`` it, after stage k of a
``--sequence`` (``stage-k``), on held-out training items for lr selection (``val``), or in a
model-only ``bench eval`` (``eval``); costs are phase ``train``. Records, tables, plots and the
CLI build and parse phase names only through this module, so the spelling lives in one place.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

# -- phases ----------------------------------------------------------------------------------

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


# -- display formats -------------------------------------------------------------------------

Format = Callable[[float], str]


def fixed(digits: int) -> Format:
    """``digits`` decimals; a value that rounds to zero prints without a sign (no "-0.0")."""
    def fmt(v: float) -> str:
        text = f"{v:.{digits}f}"
        return text[1:] if text.startswith("-") and float(text) == 0 else text
    return fmt


def human_count(v: float) -> str:
    """Parameter counts the way papers print them (1.84M, 135M)."""
    for div, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(v) >= div:
            return f"{v / div:.3g}{suffix}"
    return f"{v:.0f}"


def significant(v: float) -> str:
    """Three significant digits: the format of a figure without a display of its own."""
    return f"{v:.3g}"


# -- the catalogue ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Metric:
    """One figure: its stored unit, which way is better, and how a table column shows it.

    ``higher_is_better`` is None for figures that describe a run without ranking it (step
    counts, the base model's size): tables mark no best value for them. A table shows
    ``value * scale`` with ``format``; ``header`` already names the shown unit.
    """

    name: str
    unit: str
    higher_is_better: bool | None
    header: str
    definition: str
    format: Format = significant
    scale: float = 1.0

    def shown(self, value: float) -> str:
        """The value as its table column prints it."""
        return self.format(value * self.scale)


GIB, MIB = 1 / 2**30, 1 / 2**20

_FIGURES = [
    # quality (per task; fractions of the test items)
    Metric("acc", "fraction", True, "Acc (%)", "share of test items answered correctly", fixed(1), 100.0),
    Metric("acc_norm", "fraction", True, "Acc norm (%)",
           "multiple choice scored by log-likelihood per character of the choice", fixed(1), 100.0),
    # forgetting (harness/forgetting.py computes every one of them)
    Metric("forgetting", "fraction", False, "Forgetting (pts)",
           "accuracy lost on a task: before - after (retention), or best earlier stage - last stage "
           "(sequence); positive = lost", fixed(1), 100.0),
    Metric("forgetting_mean", "fraction", False, "Mean forgetting",
           "mean over a sequence's tasks but the last of their forgetting", fixed(1), 100.0),
    Metric("bwt", "fraction", True, "BWT", "backward transfer: mean over j < n of R[n][j] - R[j][j]",
           fixed(1), 100.0),
    Metric("final_avg_acc", "fraction", True, "Final avg acc",
           "mean accuracy over a sequence's tasks after its last stage", fixed(1), 100.0),
    Metric("lm_loss_forgetting", "nats", False, "LM loss change (nats)",
           "mean token loss on held-out text after training minus before"),
    # time
    Metric("step_time_s", "s", False, "Step (s)",
           "median wall time of one optimizer step after the warm-up steps, profiled step excluded", fixed(3)),
    Metric("step_time_p10_s", "s", False, "Step p10 (s)", "10th percentile of the same step times", fixed(3)),
    Metric("step_time_p90_s", "s", False, "Step p90 (s)", "90th percentile of the same step times", fixed(3)),
    Metric("step_time_steps", "count", None, "Timed steps", "how many steps the step-time figures summarise",
           human_count),
    Metric("tokens_per_s", "tokens/s", True, "Tokens/s",
           "non-padding tokens trained on per second of step time, over the same steps", fixed(0)),
    Metric("train_time_s", "s", False, "Train (s)", "wall time of the training loop, evaluation excluded",
           fixed(1)),
    Metric("calibration_time_s", "s", False, "Calib. (s)",
           "one-off work before training (the method's adapt: Hessian pass, SVD init ...)", fixed(2)),
    # memory
    Metric("peak_mem_bytes", "bytes", False, "Peak mem (GiB)",
           "peak memory during training: the CUDA allocator peak on GPU, else the process RSS peak",
           fixed(2), GIB),
    Metric("peak_mem_allocated_bytes", "bytes", False, "Peak alloc (GiB)",
           "CUDA caching-allocator peak of allocated memory during training", fixed(2), GIB),
    Metric("peak_mem_reserved_bytes", "bytes", False, "Peak reserved (GiB)",
           "CUDA caching-allocator peak of reserved memory during training", fixed(2), GIB),
    Metric("peak_mem_nvml_bytes", "bytes", False, "Peak NVML (GiB)",
           "this process's device memory as NVML saw it during training (a cross-check)", fixed(2), GIB),
    Metric("peak_rss_bytes", "bytes", False, "Peak RSS (GiB)",
           "peak resident set size of the worker process during training (CPU)", fixed(2), GIB),
    Metric("rss_before_train_bytes", "bytes", None, "RSS before (GiB)",
           "resident set size right before training: the baseline of the RSS peak", fixed(2), GIB),
    Metric("param_bytes", "bytes", False, "Weights (MiB)", "bytes of every distinct parameter and buffer",
           fixed(1), MIB),
    Metric("grad_bytes", "bytes", False, "Gradients (MiB)", "bytes the method allocates for gradients",
           fixed(1), MIB),
    Metric("optimizer_state_bytes", "bytes", False, "Optimizer (MiB)", "bytes of optimizer state",
           fixed(1), MIB),
    Metric("extra_state_bytes", "bytes", False, "Method state (MiB)",
           "bytes of the method's own state (masks, importance, subnet indices)", fixed(1), MIB),
    Metric("activation_bytes", "bytes", False, "Activations (MiB)",
           "bytes of storages saved for backward in one profiled step, parameters excluded", fixed(1), MIB),
    Metric("flops_per_step", "flops", False, "FLOPs/step",
           "FLOPs of one profiled step (torch.utils.flop_counter)", human_count),
    Metric("comm_bytes_per_step", "bytes", False, "Comm (MiB/step)",
           "bytes passed to collectives inside an optimizer step, counted where issued (gradient all-reduce "
           "buckets and the loss), mean over the steps; runs on several processes only", fixed(2), MIB),
    # size and progress
    Metric("trainable_params", "count", False, "Trainable", "parameters the method trains", human_count),
    Metric("trainable_pct", "%", False, "Trainable %", "trainable parameters over the base model's", fixed(3)),
    Metric("total_params", "count", None, "Params", "parameters of the base model, tied weights once",
           human_count),
    Metric("final_loss", "nats", False, "Final loss", "mean training loss of the last five steps", fixed(3)),
    Metric("steps", "count", None, "Steps", "optimizer steps trained, over every stage", human_count),
    # bench perf (interleaved rounds against the frozen floor, one process)
    Metric("step_time_mean_s", "s", False, "Step mean (s)", "mean wall time of one optimizer step", fixed(3)),
    Metric("ratio_to_floor", "ratio", False, "x floor",
           "median over rounds of the step time over the frozen floor's, their steps alternated one by one", fixed(3)),
    Metric("ratio_to_lora", "ratio", False, "x lora",
           "median over rounds of the step time over LoRA's in the same round", fixed(3)),
    Metric("mem_accounted_bytes", "bytes", False, "Accounted (MiB)",
           "activation + gradient + optimizer-state bytes", fixed(1), MIB),
]
CATALOGUE: dict[str, Metric] = {m.name: m for m in _FIGURES}

# the peak-memory figures, the one that describes a run first: the allocator peak where there
# is one (GPU), else the RSS peak (CPU)
PEAK_MEMORY = ("peak_mem_allocated_bytes", "peak_rss_bytes")


def get(name: str) -> Metric:
    """The catalogued figure, or for a name the harness did not define (an ``lm-eval:`` task's
    own metric) an accuracy-like fraction without a ranking direction."""
    return CATALOGUE.get(name) or Metric(name, "fraction", None, name, "reported by the task's evaluator")


def unit(name: str) -> str:
    """The unit a record stores ``name`` in."""
    return get(name).unit


def peak_memory(figures: Mapping[str, float]) -> float | None:
    """A run's ``peak_mem_bytes`` from its cost figures (None when it measured none)."""
    return next((figures[k] for k in PEAK_MEMORY if k in figures), None)
