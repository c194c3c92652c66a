"""Name -> MethodSpec. Adding a method is one module plus one line in ``_MODULES``.

Each module listed in ``_MODULES`` exposes ``METHODS: list[MethodSpec]`` with the names listed
beside it here (a test checks they agree). The names are plain data, so a typo in ``--methods``
is reported without importing torch or any method (a fraction of a second); a module is imported
only when one of its methods is used, so an optional dependency (galore-torch, ...) only matters
to the method that needs it. ``peft:<type>`` builds any peft tuner on the fly.
"""
from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from methods.base import MethodSpec

_MODULES: dict[str, tuple[str, ...]] = {
    "methods.full": ("full",),
    "methods.peft_tuners": ("lora", "dora", "pissa", "adalora"),
    "methods.peft_leaders": ("hira", "shira", "miss", "rslora", "vera", "supertuning", "kasa"),
    "methods.losia": ("losia", "losia-pro"),
    "methods.galore": ("galore",),
    "methods.localized_lora": ("localized-lora", "localized-lora-diag"),
    "methods.sensitivity_lora": ("sensitivity-lora",),
}
PEFT_PREFIX = "peft:"

_cache: dict[str, MethodSpec] = {}


class UnknownMethod(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; we want a clean line
        return str(self.args[0])


class MissingExtra(UnknownMethod):
    """The method's optional package is not installed (the message names the extra)."""


def names() -> list[str]:
    """Every registered method name (no module imported)."""
    return sorted(n for listed in _MODULES.values() for n in listed)


def check_name(name: str) -> None:
    """Raise ``UnknownMethod`` (listing the valid names) for a name no module registers; cheap."""
    if not name.startswith(PEFT_PREFIX) and name not in names():
        raise UnknownMethod(f"unknown method {name!r}; valid: {', '.join(names())}, or peft:<type> (e.g. peft:vera)")


def _spec(name: str) -> MethodSpec:
    if name not in _cache:
        module = next(m for m, listed in _MODULES.items() if name in listed)
        for spec in importlib.import_module(module).METHODS:
            _cache[spec.name] = spec
    return _cache[name]


def get(name: str) -> MethodSpec:
    if name.startswith(PEFT_PREFIX):
        from methods.peft_tuners import generic_peft_spec

        try:
            return generic_peft_spec(name[len(PEFT_PREFIX):])
        except LookupError as err:  # no such peft tuner: the message lists the valid ones
            raise UnknownMethod(str(err)) from None
    check_name(name)
    spec = _spec(name)
    if spec.requires and importlib.util.find_spec(spec.requires[0]) is None:
        module, extra = spec.requires
        raise MissingExtra(f"method {name!r} needs {module}, which is not installed: pip install 'peft-bench[{extra}]'")
    return spec
