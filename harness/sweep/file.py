"""A sweep file (YAML, or TOML) parsed and checked into a ``Sweep``.

It names models, methods with ``--set``-style overrides, tasks, seeds, a budget and optionally
``select`` (tune one key, typically ``lr``, on held-out training items). Every list value is an
axis; ``harness.sweep.grid`` expands the axes.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.config import ConfigError

TOP_KEYS = ("model", "models", "methods", "tasks", "seeds", "per_task", "retention", "preset", "budget", "set",
            "select")
SELECT_KEYS = ("over", "metric", "validation", "seeds")


@dataclass(frozen=True)
class Selection:
    """Tune ``over`` by ``metric`` on ``validation`` held-out training items per task."""

    over: str
    metric: str = "val_acc"  # val_acc or val_acc_norm
    validation: int = 200
    seeds: tuple[int, ...] = ()  # tuning seeds; () = the sweep's first seed


@dataclass(frozen=True)
class Sweep:
    """A parsed sweep file."""

    name: str
    models: tuple[str, ...]
    methods: tuple[tuple[str, dict[str, Any]], ...]  # name and its overrides (a list value is an axis)
    tasks: str
    seeds: tuple[int, ...]
    per_task: bool
    retention: str
    preset: str | None
    common: dict[str, Any]  # budget and set: every method's overrides
    select: Selection | None


def load(path: Path, tune: str | None = None) -> Sweep:
    """Parse and check a sweep file; ``tune`` (``--tune KEY``) adds or overrides ``select.over``."""
    data = _read(Path(path))
    unknown = set(data) - set(TOP_KEYS)
    if unknown:
        raise ConfigError(f"sweep: unknown key(s) {', '.join(sorted(unknown))}; valid: {', '.join(TOP_KEYS)}")
    for key in ("methods", "tasks"):
        if key not in data:
            raise ConfigError(f"sweep: {key} is required")
    methods = data["methods"]
    if isinstance(methods, dict):
        pairs = tuple((str(m), dict(o or {})) for m, o in methods.items())
    else:
        pairs = tuple((m, {}) for m in _names(methods, "methods"))
    budget = dict(data.get("budget") or {})
    bad = [k for k in budget if "." in k]
    if bad:
        raise ConfigError(f"sweep: budget takes trainer keys (max_steps, epochs, eval_limit, lr, ...), not {bad}")
    select = dict(data.get("select") or {})
    if tune:
        select["over"] = tune
    sweep = Sweep(
        name=Path(path).stem,
        models=_names(data.get("models", data.get("model", "smollm2-135m")), "models"),
        methods=pairs,
        tasks=",".join(_names(data["tasks"], "tasks")),
        seeds=tuple(int(s) for s in _names(data.get("seeds", [0]), "seeds")),
        per_task=bool(data.get("per_task", False)),
        retention=str(data.get("retention", "auto")),
        preset=data.get("preset"),
        common={**budget, **dict(data.get("set") or {})},
        select=_selection(select) if select else None,
    )
    if sweep.select and not set(sweep.select.seeds) <= set(sweep.seeds):
        raise ConfigError(f"sweep: select.seeds {list(sweep.select.seeds)} must be among seeds {list(sweep.seeds)}")
    return sweep


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"sweep file {path}: no such file")
    if path.suffix == ".toml":
        import tomllib

        parse, errors = tomllib.loads, (tomllib.TOMLDecodeError,)
    else:
        import yaml

        parse, errors = yaml.safe_load, (yaml.YAMLError,)
    try:
        data = parse(path.read_text())
    except errors as err:
        raise ConfigError(f"sweep file {path}: {' '.join(str(err).split())}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"sweep file {path}: expected a mapping of keys ({', '.join(TOP_KEYS)})")
    return data


def _names(value: Any, what: str) -> tuple[str, ...]:
    items = value if isinstance(value, list) else str(value).split(",")
    names = tuple(str(v).strip() for v in items if str(v).strip())
    if not names:
        raise ConfigError(f"sweep: {what} is empty")
    return names


def _selection(select: dict[str, Any]) -> Selection:
    unknown = set(select) - set(SELECT_KEYS)
    if unknown or "over" not in select:
        raise ConfigError(f"sweep: select needs 'over' and takes {', '.join(SELECT_KEYS)} (got {sorted(select)})")
    metric = str(select.get("metric", "val_acc"))
    if metric not in ("val_acc", "val_acc_norm"):
        raise ConfigError(f"sweep: select.metric {metric!r}: valid are val_acc, val_acc_norm")
    seeds = select.get("seeds", [])
    seeds = tuple(int(s) for s in (seeds if isinstance(seeds, list) else [seeds]))
    selection = Selection(over=str(select["over"]), metric=metric, validation=int(select.get("validation", 200)),
                          seeds=seeds)
    if selection.validation <= 0:
        raise ConfigError("sweep: select.validation must be a positive number of held-out training items")
    return selection
