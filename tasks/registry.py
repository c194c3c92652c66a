"""Name -> Task, suites, and cached loading. Adding a family is one module in ``_FAMILIES``.

Each family module exposes ``TASKS: list[Task]``. Later families (math, ``file:PATH`` tasks
read from a user's file, ``lm-eval:NAME`` tasks borrowed from lm-evaluation-harness) plug in
here: a module for the first, a prefix branch in ``get`` for the other two.
"""
from __future__ import annotations

import importlib
import re

from tasks import sources
from tasks.base import Task, TaskData

_FAMILIES = ["tasks.commonsense", "tasks.synthetic"]
SUITES: dict[str, list[str]] = {
    "commonsense": ["boolq", "piqa", "siqa", "hellaswag", "winogrande", "arc_e", "arc_c", "obqa"],
}

_tasks: dict[str, Task] | None = None
_loaded: dict[tuple, TaskData] = {}


class UnknownTask(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; we want a clean line
        return str(self.args[0])


def _all() -> dict[str, Task]:
    global _tasks
    if _tasks is None:
        found: dict[str, Task] = {}
        for mod in _FAMILIES:
            for task in importlib.import_module(mod).TASKS:
                if task.name in found or task.name in SUITES:
                    raise RuntimeError(f"task name {task.name!r} registered twice")
                found[task.name] = task
        _tasks = found
    return _tasks


def names() -> list[str]:
    return list(_all())


def _valid() -> str:
    return f"valid tasks: {', '.join(names())}; suites: {', '.join(SUITES)}"


def get(name: str) -> Task:
    tasks = _all()
    if name not in tasks:
        raise UnknownTask(f"unknown task {name!r}; {_valid()}")
    return tasks[name]


def expand(spec: str) -> list[str]:
    """'commonsense' or 'boolq,arc_e' (suites and tasks, comma- or space-separated) -> task names."""
    out: list[str] = []
    for part in filter(None, re.split(r"[,\s]+", spec.strip())):
        for name in SUITES.get(part, [part]):
            get(name)  # raises UnknownTask with the valid names
            if name not in out:
                out.append(name)
    if not out:
        raise UnknownTask(f"no task given; {_valid()}")
    return out


def load(task: Task | str) -> TaskData:
    """The task's data, loaded once per process per data source; sets ``task.extra['chance']``."""
    task = get(task) if isinstance(task, str) else task
    root, _ = sources.resolve_data_dir()
    key = (task.name, str(root), sources.hub_enabled())
    if key not in _loaded:
        data = task.load()
        if task.answer_type == "choice" and data.test:
            task.extra["chance"] = sum(1 / len(ex.choices) for ex in data.test) / len(data.test)
        _loaded[key] = data
    return _loaded[key]


def describe() -> list[str]:
    """One line per task for ``bench list tasks``: name, family, choices, train split, description.

    Reads no data, so listing stays instant and works without the data folder.
    """
    lines = []
    for t in _all().values():
        choices = f"{t.extra.get('n_choices', '?')} choices"
        train = f"train: {t.extra.get('train_source', '?')}"
        lines.append(f"{t.name:<11} {t.family:<12} {choices:<24} {train:<24} {t.description}")
    lines.append("suites: " + "; ".join(f"{s} = {','.join(m)}" for s, m in SUITES.items()))
    return lines
