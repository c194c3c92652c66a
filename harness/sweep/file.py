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
from harness.plan import DEFAULT_RETENTION

TOP_KEYS = ("model", "models", "methods", "tasks", "seeds", "per_task", "retention", "preset", "budget", "set",
            "select")
SELECT_KEYS = ("over", "metric", "validation", "seeds")
# top-level keys and the YAML/TOML types they take (checked before anything is read from them)
SHAPES: dict[str, tuple[type, ...]] = {
    "model": (str,), "models": (str, list), "methods": (dict, list, str), "tasks": (str, list),
    "seeds": (int, list, str), "per_task": (bool,), "retention": (str, list), "preset": (str, type(None)),
    "budget": (dict, type(None)), "set": (dict, type(None)), "select": (dict, type(None)),
}
SHAPE_WORDS = {"model": "a model name", "models": "a list of model names", "methods": "a list of methods or a "
               "mapping of method -> overrides", "tasks": "a list of task names", "seeds": "a list of whole numbers",
               "per_task": "true or false", "retention": "none, auto or a list of tasks", "preset": "a preset name",
               "budget": "a mapping of trainer keys (max_steps: 60)", "set": "a mapping of --set keys (lora.r: 16)",
               "select": "a mapping (over: lr, validation: 200)"}


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
    for key, kinds in SHAPES.items():
        if key in data and not isinstance(data[key], kinds):
            raise ConfigError(f"sweep: {key}: expected {SHAPE_WORDS[key]}, got {_kind(data[key])} {data[key]!r}")
    methods = data["methods"]
    if isinstance(methods, dict):
        for m, o in methods.items():
            if not isinstance(o, (dict, type(None))):
                raise ConfigError(f"sweep: methods: {m}: expected a mapping of overrides (key: value, or key: "
                                  f"[values] for an axis), got {_kind(o)} {o!r}")
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
        seeds=_seeds(data.get("seeds", [0]), "seeds"),
        per_task=bool(data.get("per_task", False)),
        retention=str(data.get("retention", DEFAULT_RETENTION)),
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
        try:
            import tomllib
        except ImportError:  # Python 3.10: the same parser, packaged as tomli
            import tomli as tomllib

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
    seeds = _seeds(select["seeds"], "select.seeds") if "seeds" in select else ()
    validation = select.get("validation", 200)
    if not isinstance(validation, int) or isinstance(validation, bool) or validation <= 0:
        raise ConfigError("sweep: select.validation must be a positive number of held-out training items")
    return Selection(over=str(select["over"]), metric=metric, validation=validation, seeds=seeds)


def _seeds(value: Any, what: str) -> tuple[int, ...]:
    """Seeds: whole numbers, as a list or comma-separated text."""
    items = value if isinstance(value, list) else str(value).split(",")
    seeds = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (int, str)) or not str(item).strip().lstrip("-").isdigit():
            raise ConfigError(f"sweep: {what}: {item!r} is not a whole number (e.g. {what}: [0, 1, 2])")
        seeds.append(int(item))
    if not seeds:
        raise ConfigError(f"sweep: {what} is empty")
    return tuple(seeds)


def _kind(value: Any) -> str:
    return {str: "text", list: "a list", dict: "a mapping", bool: "true/false", int: "a number",
            float: "a number"}.get(type(value), type(value).__name__)
