"""A sweep expanded: every combination of its axes becomes a ``plan.Grid`` (one ``bench run``),
planned by ``plan.runs`` exactly as ``bench run`` plans it, so a sweep has the run ids of the
equivalent commands and is validated the same way, before anything runs."""
from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from typing import Any

from harness import plan
from harness.config import ConfigError, EvalConfig, RunConfig, TrainConfig
from harness.schema.settings import FLAG_KEYS
from harness.sweep.file import Sweep

# bench run's own budget options (not --set keys), typed as their configs' defaults
BUDGET = {k: type(getattr(TrainConfig(), k, getattr(EvalConfig(), k, None))) for k in FLAG_KEYS}
MAX_RUNS = 100_000  # planning takes ~14 ms a run: beyond this a sweep is surely a typo in an axis
PROGRESS_FROM = 1_000  # runs: a bigger grid shows a progress bar while it is planned
Group = tuple[str, str, tuple[tuple[str, str], ...], tuple[str, ...]]  # model, method, other settings, tasks
Groups = dict[Group, dict[str | None, list[RunConfig]]]  # per group: the tuned key's value -> its final runs


@dataclass(frozen=True)
class Point:
    """One ``bench run`` of a sweep: a model, one method and scalar settings."""

    model: str
    method: str
    settings: tuple[tuple[str, str], ...]  # (key, value as --set text), budget keys included

    def without(self, key: str) -> tuple[tuple[str, str], ...]:
        return tuple(kv for kv in self.settings if kv[0] != key)


def points(sweep: Sweep) -> list[Point]:
    """The sweep's ``bench run`` invocations: model x method x every combination of settings."""
    names = {m for m, _ in sweep.methods}
    out = []
    for method, own in sweep.methods:
        common = {}
        for key, value in sweep.common.items():
            prefix = key.split(".", 1)[0] if "." in key else None
            if prefix in (None, "trainer", method):
                common[key] = value
            elif prefix not in names:
                raise ConfigError(f"sweep: set {key}: {prefix!r} is not a method of the sweep "
                                  f"({', '.join(sorted(names))})")
        for combo in _axes({**common, **own}):
            if {"max_steps", "epochs"} <= {k for k, _ in combo}:
                raise ConfigError(f"sweep: {method}: give max_steps or epochs, not both")
            out += [Point(model, method, combo) for model in sweep.models]
    return out


def grid(sweep: Sweep, point: Point) -> plan.Grid:
    """The ``bench run`` grid this point stands for."""
    overrides = dict(point.settings)
    budget = {key: _number(key, overrides.pop(key), kind) for key, kind in BUDGET.items() if key in overrides}
    return plan.Grid(model=point.model, methods=(point.method,), tasks=sweep.tasks, seeds=sweep.seeds,
                     per_task=sweep.per_task, retention=sweep.retention, preset=sweep.preset, overrides=overrides,
                     **budget)


def expand(sweep: Sweep) -> tuple[Groups, dict[str, str]]:
    """Final runs per selection group and candidate value of the tuned key (in sweep order), and
    each run's settings as text (run id -> ``lr=0.0001 lora.r=8``) for the listings."""
    over = sweep.select.over if sweep.select else ""
    out: Groups = {}
    labels: dict[str, str] = {}
    from tqdm import tqdm

    quiet = check_size(sweep) < PROGRESS_FROM
    for point in tqdm(points(sweep), desc="planning the sweep's runs", unit="point", disable=quiet):
        value = dict(point.settings).get(over)
        label = " ".join(f"{k}={v}" for k, v in point.settings)
        for cfg in plan.runs(grid(sweep, point)):
            group = (point.model, point.method, point.without(over), cfg.train_tasks)
            out.setdefault(group, {}).setdefault(value, []).append(cfg)
            labels[cfg.run_id] = label
            if sweep.select:
                labels[dataclasses.replace(cfg, validation=sweep.select.validation).run_id] = label
    return out, labels


def size(sweep: Sweep) -> int:
    """How many runs the sweep stands for (before tuning), counted without expanding it."""
    from tasks import registry as tasks

    try:
        n_tasks = len(tasks.expand(sweep.tasks)) if sweep.per_task else 1
    except Exception:  # noqa: BLE001 - an unknown task is reported when the runs are planned
        n_tasks = len(sweep.tasks.split(","))
    total = 0
    for method, own in sweep.methods:
        settings = {**{k: v for k, v in sweep.common.items() if k.split(".", 1)[0] in (k, "trainer", method)}, **own}
        combos = 1
        for value in settings.values():
            combos *= len(value) if isinstance(value, list) else 1
        total += combos
    return total * len(sweep.models) * len(sweep.seeds) * n_tasks


def check_size(sweep: Sweep) -> int:
    """Refuse a sweep too big to plan (minutes of silence, memory growing) before planning it."""
    n = size(sweep)
    if n > MAX_RUNS:
        raise ConfigError(f"sweep: {n:,} runs (models x method settings x tasks x seeds) is more than the "
                          f"{MAX_RUNS:,} one sweep may plan; narrow its axes or split it into several files")
    return n


def every_run(groups: Groups) -> list[RunConfig]:
    return [cfg for g in groups.values() for cfgs in g.values() for cfg in cfgs]


def _text(value: Any) -> str:
    """A YAML/TOML scalar as ``--set`` text (parsed back by ``config.parse_value``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, (dict, tuple)):
        raise ConfigError(f"sweep: {value!r} is not a scalar (a list is an axis; a list-valued key is written "
                          f"as text, e.g. \"q_proj,v_proj\")")
    return str(value)


def _axes(settings: dict[str, Any]) -> list[tuple[tuple[str, str], ...]]:
    """Every combination of the settings' values (a list value is an axis)."""
    values = []
    for key, value in settings.items():
        options = value if isinstance(value, list) else [value]
        if not options:
            raise ConfigError(f"sweep: {key} is an empty list")
        values.append([(key, _text(v)) for v in options])
    return [tuple(combo) for combo in itertools.product(*values)]


def _number(key: str, text: str, kind: type) -> int | float:
    """A budget value, read as ``bench run --max-steps/--epochs/--eval-limit`` reads it."""
    try:
        return kind(text)
    except ValueError:
        raise ConfigError(f"sweep: {key} {text!r} is not {'an integer' if kind is int else 'a number'}") from None
