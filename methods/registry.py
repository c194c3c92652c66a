"""Name -> MethodSpec. Adding a method is one module plus one line in ``_MODULES``.

Each module listed in ``_MODULES`` exposes ``METHODS: list[MethodSpec]``. Modules are imported
lazily so that ``bench list`` stays fast and an optional dependency (galore-torch, ...) only
matters to the method that needs it. ``peft:<type>`` builds any peft tuner on the fly.
"""
from __future__ import annotations

import importlib
import importlib.util

from methods.base import MethodSpec

_MODULES = [
    "methods.full",
    "methods.peft_tuners",
    "methods.peft_leaders",
    "methods.losia",
    "methods.galore",
    "methods.localized_lora",
    "methods.sensitivity_lora",
]

_cache: dict[str, MethodSpec] | None = None


class UnknownMethod(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; we want a clean line
        return str(self.args[0])


class MissingExtra(UnknownMethod):
    """The method's optional package is not installed (the message names the extra)."""


def _load() -> dict[str, MethodSpec]:
    global _cache
    if _cache is None:
        found: dict[str, MethodSpec] = {}
        for mod in _MODULES:
            for spec in importlib.import_module(mod).METHODS:
                if spec.name in found:
                    raise RuntimeError(f"method {spec.name!r} registered twice")
                found[spec.name] = spec
        _cache = found
    return _cache


def names() -> list[str]:
    return sorted(_load())


def get(name: str) -> MethodSpec:
    if name.startswith("peft:"):
        from methods.peft_tuners import generic_peft_spec

        try:
            return generic_peft_spec(name[len("peft:"):])
        except LookupError as err:  # no such peft tuner: the message lists the valid ones
            raise UnknownMethod(str(err)) from None
    methods = _load()
    if name not in methods:
        raise UnknownMethod(
            f"unknown method {name!r}; valid: {', '.join(names())}, or peft:<type> (e.g. peft:vera)"
        )
    spec = methods[name]
    if spec.requires and importlib.util.find_spec(spec.requires[0]) is None:
        module, extra = spec.requires
        raise MissingExtra(f"method {name!r} needs {module}, which is not installed: pip install 'peft-bench[{extra}]'")
    return spec
