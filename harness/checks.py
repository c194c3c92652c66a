"""Every setting checked in one place, before anything runs: type, range, allowed values.

A value that a run cannot use must be refused when the grid is planned, in one line that names
the key, the value and what is allowed; otherwise it trains wrongly and is recorded ``ok``
(``grad_clip=-1`` is gradient ascent) or fails inside every worker of the grid.

The rules are declared beside the fields they guard: a config dataclass field carries
``metadata=rule(...)`` and ``check(obj, where)`` walks the fields. Method configs that are
peft's own classes cannot carry metadata, so ``METHOD_RULES`` holds rules by field name for
them; every plainly typed field (``r: int``) is held to its type. Relations
between fields (``micro_batch_size`` divides ``batch_size``) are a config's ``invariants()``.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from harness.config import ConfigError

Number = (int, float)


@dataclass(frozen=True)
class Rule:
    """What a field accepts: a type, an optional range or set of values, and why (for the message)."""

    kind: type | tuple[type, ...] | None = None  # None: the field's annotation, when it is plain
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low itself is refused (lr > 0)
    high_open: bool = False
    choices: tuple[Any, ...] | None = None
    note: str = ""  # e.g. "0 disables clipping"

    def allowed(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(map(str, self.choices))
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '>='} {self.low:g}")
        if self.high is not None:
            parts.append(f"{'<' if self.high_open else '<='} {self.high:g}")
        return " and ".join(parts)

    def problem(self, value: Any, annotation: Any) -> str | None:
        """Why ``value`` is refused, or None when it is fine."""
        kind = self.kind or _kind_of(annotation)
        if kind is not None and not _is(value, kind):
            return f"expected {_name(kind)}, got {type(value).__name__}"
        if isinstance(value, float) and not math.isfinite(value):
            return "must be a finite number"
        if self.choices is not None and value not in self.choices:
            return f"must be {self.allowed()}"
        if isinstance(value, Number) and not isinstance(value, bool):
            too_low = self.low is not None and (value < self.low or (self.low_open and value == self.low))
            too_high = self.high is not None and (value > self.high or (self.high_open and value == self.high))
            if too_low or too_high:
                return f"must be {self.allowed()}"
        return None


def rule(**kwargs: Any) -> dict[str, Rule]:
    """Field metadata: ``x: int = dataclasses.field(default=8, metadata=rule(low=1))``."""
    return {"check": Rule(**kwargs)}


def positive(note: str = "") -> dict[str, Rule]:
    return rule(low=0, low_open=True, note=note)


def at_least(low: float, note: str = "") -> dict[str, Rule]:
    return rule(low=low, note=note)


# peft's config classes carry no rules of ours: these apply to a field of that name in any method
METHOD_RULES: dict[str, Rule] = {
    "r": Rule(kind=int, low=1, note="the adapter rank"),
    "lora_alpha": Rule(kind=Number, low=0, low_open=True),
    "lora_dropout": Rule(kind=Number, low=0, high=1, high_open=True),
    "init_r": Rule(kind=int, low=1),
    "target_r": Rule(kind=int, low=1),
}


PLAIN = {"int": int, "float": Number, "bool": bool, "str": str, int: int, float: Number, bool: bool, str: str}


def _kind_of(annotation: Any) -> type | tuple[type, ...] | None:
    """The type a field is held to: only plainly annotated ones (``int``, ``float``, ``bool``,
    ``str``); unions and literals (peft's ``init_lora_weights: bool | Literal[...]``) are left to
    the config class's own checks."""
    try:
        return PLAIN.get(annotation)
    except TypeError:  # an unhashable annotation object
        return None


def _is(value: Any, kind: type | tuple[type, ...]) -> bool:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool):
        return bool in kinds
    return isinstance(value, kinds)


def _name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    words = {int: "an integer", float: "a number", bool: "true/false", str: "text", list: "a list", tuple: "a list"}
    if set(kinds) == {int, float}:
        return "a number"
    return " or ".join(dict.fromkeys(words.get(k, k.__name__) for k in kinds))


def check(obj: Any, where: str, by_name: dict[str, Rule] | None = None) -> None:
    """Refuse the first field of ``obj`` that breaks its rule, then the object's invariants.

    ``where`` says whose field it is in the message (``the trainer``, ``method 'lora'``).
    """
    for f in dataclasses.fields(obj):
        if not f.init:
            continue
        value = getattr(obj, f.name)
        found = f.metadata.get("check") or (by_name or {}).get(f.name) or Rule()
        problem = None if value is None and f.default is None else found.problem(value, f.type)
        if problem:
            note = f" ({found.note})" if found.note else ""
            raise ConfigError(f"{f.name}={_show(value)} for {where}: {problem}{note}")
    invariants = getattr(obj, "invariants", None)
    if callable(invariants):
        for problem in invariants():
            raise ConfigError(f"{where}: {problem}")


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else str(value)
    return str(value)
