"""One definition of every figure the harness writes, with every role a figure plays.

The catalogue (``CATALOGUE``, read through ``get``) is to this project what lm-eval's
``register_metric(..., higher_is_better=...)`` is to lm-eval: each figure is registered once
with its unit, which way is better, its table header and display format, a one-line definition
(harness/MEASUREMENT.md has the long form), and its roles: the report table that shows it as a
column, whether it is exact (a deterministic count: no spread, gated tightly by ``bench perf``)
or measured under load (flagged when the machine was busy), and its label in plots. Records take
units from here, tables headers, formats, columns and directions, plots labels, the perf gate
its exact figures; nothing downstream types a role again or guesses one from a figure's name.

A name the harness did not define is an error (``UnknownFigure``); the one legitimate outsider,
a metric an lm-eval task reports under its own name, is described by ``task_metric``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

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


# -- roles -----------------------------------------------------------------------------------

EFFICIENCY = "efficiency"  # the per-device cost table (reports.tables.efficiency_tables)
SEQUENTIAL = "sequential"  # the continual-learning summary table


class UnknownFigure(KeyError):
    """A figure name the catalogue does not define: a typo or a figure nobody registered."""

    def __str__(self) -> str:
        return f"unknown figure {self.args[0]!r}: register it in harness/schema/figures.py"


@dataclass(frozen=True)
class Metric:
    """One figure: its stored unit, which way is better, how a table column shows it, its roles.

    ``higher_is_better`` is None for figures that describe a run without ranking it (step
    counts, the base model's size): tables mark no best value for them. A table shows
    ``value * scale`` with ``format``; ``header`` already names the shown unit. ``table`` names
    the report table that has the figure as a column, ``column`` its position there; ``exact``:
    deterministic (same code, same value), so no spread and a tight gate; ``load_sensitive``: a
    time that a busy machine stretches (flagged in tables); ``plot_label``: its axis or legend
    text; ``memory_part``: one slice of the memory breakdown plot.
    """

    name: str
    unit: str
    higher_is_better: bool | None
    header: str
    definition: str
    format: Format = significant
    scale: float = 1.0
    table: str = ""
    column: int = 0
    exact: bool = False
    load_sensitive: bool = False
    plot_label: str = ""
    memory_part: bool = False


GIB, MIB = 1 / 2**30, 1 / 2**20
_PCT, _PCT_FMT = 100.0, fixed(1)

_FIGURES = [
    # quality (per task; fractions of the test items)
    Metric("acc", "fraction", True, "Acc (%)", "share of test items answered correctly", _PCT_FMT, _PCT,
           plot_label="accuracy (%)"),
    Metric("acc_norm", "fraction", True, "Acc norm (%)",
           "multiple choice scored by log-likelihood per character of the choice", _PCT_FMT, _PCT),
    # forgetting (harness/forgetting.py computes every one of them)
    Metric("forgetting", "fraction", False, "Forgetting (pts)",
           "accuracy lost on a task: before - after (retention), or best earlier stage - last stage "
           "(sequence); positive = lost", _PCT_FMT, _PCT),
    Metric("forgetting_mean", "fraction", False, "Mean forgetting",
           "mean over a sequence's tasks but the last of their forgetting", _PCT_FMT, _PCT, table=SEQUENTIAL, column=3),
    Metric("bwt", "fraction", True, "BWT", "backward transfer: mean over j < n of R[n][j] - R[j][j]",
           _PCT_FMT, _PCT, table=SEQUENTIAL, column=2),
    Metric("final_avg_acc", "fraction", True, "Final avg acc",
           "mean accuracy over a sequence's tasks after its last stage", _PCT_FMT, _PCT, table=SEQUENTIAL, column=1),
    Metric("lm_loss_forgetting", "nats", False, "LM loss change (nats)",
           "mean token loss on held-out text after training minus before"),
    # time (wall clock)
    Metric("step_time_s", "s", False, "Step (s)",
           "median wall time of one optimizer step after the warm-up steps, profiled step excluded", fixed(3),
           table=EFFICIENCY, column=4, load_sensitive=True, plot_label="step time (s)"),
    Metric("step_time_p10_s", "s", False, "Step p10 (s)", "10th percentile of the same step times", fixed(3),
           load_sensitive=True),
    Metric("step_time_p90_s", "s", False, "Step p90 (s)", "90th percentile of the same step times", fixed(3),
           load_sensitive=True),
    Metric("step_time_mean_s", "s", False, "Step mean (s)", "mean wall time of one optimizer step", fixed(3),
           load_sensitive=True),
    Metric("step_time_steps", "count", None, "Timed steps", "how many steps the step-time figures summarise",
           human_count, exact=True),
    Metric("tokens_per_s", "tokens/s", True, "Tokens/s",
           "non-padding tokens trained on per second of step time, over the same steps", fixed(0),
           table=EFFICIENCY, column=5, load_sensitive=True),
    Metric("train_time_s", "s", False, "Train (s)", "wall time of the training loop, evaluation excluded",
           fixed(1), table=EFFICIENCY, column=6, load_sensitive=True),
    Metric("calibration_time_s", "s", False, "Calib. (s)",
           "one-off work before training (the method's adapt: Hessian pass, SVD init ...)", fixed(2),
           table=EFFICIENCY, column=7, load_sensitive=True),
    # time (this thread's CPU clock: bench perf --clock cpu)
    Metric("step_cpu_time_s", "s", False, "Step CPU (s)",
           "median CPU time of the timing thread over one step (bench perf --clock cpu): the step's work "
           "without the time the scheduler gave other processes", fixed(3)),
    Metric("step_cpu_time_p10_s", "s", False, "Step CPU p10 (s)", "10th percentile of the same CPU times", fixed(3)),
    Metric("step_cpu_time_p90_s", "s", False, "Step CPU p90 (s)", "90th percentile of the same CPU times", fixed(3)),
    Metric("step_cpu_time_mean_s", "s", False, "Step CPU mean (s)", "mean CPU time of one step", fixed(3)),
    Metric("tokens_per_cpu_s", "tokens/s", True, "Tokens/CPU s", "tokens per second of step CPU time", fixed(0)),
    # memory
    Metric("peak_mem_bytes", "bytes", False, "Peak mem (GiB)",
           "peak memory during training: the CUDA allocator peak on GPU, else the process RSS peak",
           fixed(2), GIB, table=EFFICIENCY, column=3, plot_label="peak memory (GiB)"),
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
           fixed(1), MIB, exact=True, plot_label="weights", memory_part=True),
    Metric("grad_bytes", "bytes", False, "Gradients (MiB)", "bytes the method allocates for gradients",
           fixed(1), MIB, exact=True, plot_label="gradients", memory_part=True),
    Metric("optimizer_state_bytes", "bytes", False, "Optimizer (MiB)", "bytes of optimizer state",
           fixed(1), MIB, exact=True, plot_label="optimizer state", memory_part=True),
    Metric("extra_state_bytes", "bytes", False, "Method state (MiB)",
           "bytes of the method's own state (masks, importance, subnet indices)", fixed(1), MIB,
           plot_label="method state", memory_part=True),
    Metric("activation_bytes", "bytes", False, "Activations (MiB)",
           "bytes of storages saved for backward in one profiled step, parameters excluded", fixed(1), MIB,
           table=EFFICIENCY, column=8, exact=True, plot_label="activations", memory_part=True),
    Metric("mem_accounted_bytes", "bytes", False, "Accounted (MiB)",
           "activation + gradient + optimizer-state bytes", fixed(1), MIB),
    Metric("comm_bytes_per_step", "bytes", False, "Comm (MiB/step)",
           "bytes passed to collectives inside an optimizer step, counted where issued (gradient all-reduce "
           "buckets and the loss), mean over the steps; runs on several processes only", fixed(2), MIB, exact=True),
    Metric("flops_per_step", "flops", False, "FLOPs/step",
           "FLOPs of one profiled step (torch.utils.flop_counter)", human_count, exact=True),
    Metric("instructions_per_step", "count", False, "Instr./step",
           "user-space instructions retired by one untimed step, one thread (perf_event_open; CPU only)",
           human_count),
    # size and progress
    Metric("trainable_params", "count", False, "Trainable", "parameters the method trains", human_count,
           table=EFFICIENCY, column=1, exact=True),
    Metric("trainable_pct", "%", False, "Trainable %", "trainable parameters over the base model's", fixed(3),
           table=EFFICIENCY, column=2, exact=True),
    Metric("total_params", "count", None, "Params", "parameters of the base model, tied weights once",
           human_count, exact=True),
    Metric("final_loss", "nats", False, "Final loss", "mean training loss of the last five steps", fixed(3)),
    Metric("steps", "count", None, "Steps", "optimizer steps trained, over every stage", human_count),
    # bench perf (interleaved rounds against the frozen floor, one process)
    Metric("ratio_to_floor", "ratio", False, "x floor",
           "median over rounds of the step time over the frozen floor's, their steps alternated one by one", fixed(3)),
    Metric("ratio_to_floor_rounds", "ratio", False, "x floor per round",
           "every round's ratio to the floor (a list): the evidence of the gate's rank test", fixed(3)),
    Metric("ratio_to_floor_spread", "ratio", None, "x floor ±", "half the p10-p90 range of the rounds' ratios",
           fixed(3)),
    Metric("ratio_to_floor_mean", "ratio", False, "mean x floor",
           "mean step time over the floor's mean over the same rounds", fixed(3)),
    Metric("ratio_to_lora", "ratio", False, "x lora",
           "median over rounds of the step time over LoRA's in the same round", fixed(3)),
    Metric("ratio_to_lora_spread", "ratio", None, "x lora ±", "half the p10-p90 range of the rounds' ratios to LoRA",
           fixed(3)),
    Metric("ratio_to_lora_mean", "ratio", False, "mean x lora", "mean step time over LoRA's mean", fixed(3)),
]
CATALOGUE: dict[str, Metric] = {m.name: m for m in _FIGURES}

# the peak-memory rule: the figures that may give a run's ``peak_mem_bytes``, the one that
# describes the run first: the allocator peak where there is one (GPU), else the RSS peak (CPU)
PEAK_MEMORY = ("peak_mem_allocated_bytes", "peak_rss_bytes")
PEAK = "peak_mem_bytes"

# bench perf times steps on a wall clock or on the timing thread's CPU clock; the figures it
# stores for each, in the same order (median, mean, p10, p90, tokens per second)
CLOCK_FIGURES = {
    "wall": ("step_time_s", "step_time_mean_s", "step_time_p10_s", "step_time_p90_s", "tokens_per_s"),
    "cpu": ("step_cpu_time_s", "step_cpu_time_mean_s", "step_cpu_time_p10_s", "step_cpu_time_p90_s",
            "tokens_per_cpu_s"),
}


def get(name: str) -> Metric:
    """The catalogued figure; ``UnknownFigure`` for any other name."""
    try:
        return CATALOGUE[name]
    except KeyError:
        raise UnknownFigure(name) from None


def task_metric(name: str) -> Metric:
    """A figure as an evaluation reports it: catalogued, or for a metric an lm-eval task defines
    under its own name, an accuracy-like fraction without a ranking direction."""
    return CATALOGUE.get(name) or Metric(name, "fraction", None, name, "reported by the task's evaluator")


def unit(name: str) -> str:
    """The unit a record stores ``name`` in (``UnknownFigure`` for an uncatalogued name)."""
    return get(name).unit


def columns(table: str) -> list[str]:
    """The figures ``table`` shows as columns, in order."""
    return [m.name for m in sorted((m for m in _FIGURES if m.table == table), key=lambda m: m.column)]


def names(role: str) -> tuple[str, ...]:
    """The figures with a boolean role set (``exact``, ``load_sensitive``, ``memory_part``), in catalogue order."""
    return tuple(m.name for m in _FIGURES if getattr(m, role))


def peak_memory_figure(gpu: bool) -> Metric:
    """The figure a device's ``peak_mem_bytes`` comes from (its header names the source)."""
    return get(PEAK_MEMORY[0] if gpu else PEAK_MEMORY[-1])


def check(figures: Mapping[str, object] | Iterable[str], where: str) -> None:
    """Raise ``UnknownFigure`` (naming ``where``) if any figure name is not catalogued."""
    unknown = sorted(set(figures) - set(CATALOGUE))
    if unknown:
        raise UnknownFigure(f"{', '.join(unknown)} (written by {where})")
