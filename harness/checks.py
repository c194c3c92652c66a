"""Every setting checked in one place, before anything runs: type, range, allowed values.

A value that a run cannot use must be refused when the grid is planned, in one line that names
the key, the value and what is allowed; otherwise it trains wrongly and is recorded ``ok``
(``grad_clip=-1`` is gradient ascent) or fails inside every worker of the grid.

The rules are a table by key name, so they hold wherever a key lives (the trainer's settings,
the evaluation's, a method's) and whoever set it (a default, a preset, ``--set``, a sweep
file). Method configs that are peft's own classes get ``METHOD_RULES`` by field name; every
other plainly typed field (``r: int``) is held to its type. Relations between keys
(``micro_batch_size`` divides ``batch_size``) are ``INVARIANTS``.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from harness.errors import ConfigError

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


def _range(low: float | None = None, high: float | None = None, kind: Any = None, note: str = "", *,
           low_open: bool = False, high_open: bool = False) -> Rule:
    return Rule(kind=kind, low=low, high=high, low_open=low_open, high_open=high_open, note=note)


# the trainer's and the evaluation's keys (no prefix in --set)
RULES: dict[str, Rule] = {
    "lr": _range(0, low_open=True),
    "weight_decay": _range(0),
    "batch_size": _range(1, kind=int),
    "micro_batch_size": _range(0, kind=int, note="0 = batch_size"),
    "max_length": _range(1, kind=int),
    "max_steps": _range(0, kind=int, note="0 = use epochs"),
    "epochs": _range(0),
    "warmup_steps": _range(0, kind=int),
    "warmup_ratio": _range(0, 1),
    "min_lr_ratio": _range(0, 1),
    "grad_clip": _range(0, note="0 disables clipping"),
    "eval_batch_size": _range(1, kind=int),
    "eval_limit": _range(0, kind=int, note="0 = all"),
    "num_beams": _range(1, kind=int),
    "max_new_tokens": _range(0, kind=int, note="0 = the task's budget"),
    "timing_warmup_steps": _range(0, kind=int),
    "precision": Rule(kind=str, choices=("auto", "fp32", "bf16")),
}

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


def check(obj: Any, where: str, rules: dict[str, Rule]) -> None:
    """Refuse the first field of ``obj`` (a config dataclass) that breaks its rule, then the
    first broken invariant among its fields. ``where`` names the owner in the message (``the
    trainer``, ``method 'lora'``)."""
    for f in dataclasses.fields(obj):
        if not f.init:
            continue
        value = getattr(obj, f.name)
        found = rules.get(f.name) or Rule()
        # a config class's own default is the author's choice (peft's OFT: r=0, sized by oft_block_size)
        problem = None if value is None and f.default is None or value == f.default else found.problem(value, f.type)
        if problem:
            note = f" ({found.note})" if found.note else ""
            raise ConfigError(f"{f.name}={_show(value)} for {where}: {problem}{note}")
    for invariant in INVARIANTS:
        problem = invariant(obj)
        if problem:
            raise ConfigError(f"{where}: {problem}")


def _micro_divides(obj: Any) -> str | None:
    batch, micro = getattr(obj, "batch_size", None), getattr(obj, "micro_batch_size", None)
    if batch and micro and batch % micro:
        return f"micro_batch_size={micro} does not divide batch_size={batch}"
    return None


def _some_budget(obj: Any) -> str | None:
    if getattr(obj, "max_steps", None) == 0 and getattr(obj, "epochs", None) == 0:
        return "max_steps=0 and epochs=0: set --max-steps N or --epochs E"
    return None


INVARIANTS = (_micro_divides, _some_budget)


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else str(value)
    return str(value)
