"""Name -> Task, suites, and cached loading. Adding a family is one module in ``_FAMILIES``.

Each family module exposes ``TASKS: list[Task]``. Two kinds of task are made on demand from
their name: ``file:PATH`` (any LLM-Adapters-format file, ``tasks.files``) and ``lm-eval:NAME``
(a task of lm-evaluation-harness, ``tasks.lm_eval_bridge``).
"""
from __future__ import annotations

import importlib
import re

from tasks import sources
from tasks.base import Example, Task, TaskData

_FAMILIES = ["tasks.commonsense", "tasks.math_tasks", "tasks.synthetic"]
SUITES: dict[str, list[str]] = {
    "commonsense": ["boolq", "piqa", "siqa", "hellaswag", "winogrande", "arc_e", "arc_c", "obqa"],
    "math": ["gsm8k", "addsub", "multiarith", "singleeq"],
}
PREFIXES = ("file:", "lm-eval:")

_tasks: dict[str, Task] | None = None
_made: dict[str, Task] = {}  # file: and lm-eval: tasks made so far
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
    return (f"valid tasks: {', '.join(names())}; suites: {', '.join(SUITES)}; "
            f"or file:PATH (an LLM-Adapters-format file) or lm-eval:NAME (an lm-evaluation-harness task)")


def get(name: str) -> Task:
    tasks = _all()
    if name in tasks:
        return tasks[name]
    if name.startswith(PREFIXES):
        if name not in _made:
            if name.startswith("file:"):
                from tasks import files

                task = files.make_task(name[len("file:"):])
            else:
                from tasks import lm_eval_bridge

                task = lm_eval_bridge.make_task(name[len("lm-eval:"):])
            _made[task.name] = _made[name] = task
        return _made[name]
    raise UnknownTask(f"unknown task {name!r}; {_valid()}")


def expand(spec: str) -> list[str]:
    """'commonsense' or 'boolq,arc_e' (suites and tasks, comma- or space-separated) -> task names."""
    out: list[str] = []
    for part in filter(None, re.split(r"[,\s]+", spec.strip())):
        for name in SUITES.get(part, [part]):
            name = get(name).name  # raises UnknownTask with the valid names; file: paths made absolute
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
            sizes = [len(ex.choices) or len(task.vocabulary) for ex in data.test]
            if all(sizes):
                task.extra["chance"] = sum(1 / n for n in sizes) / len(sizes)
        _loaded[key] = data
    return _loaded[key]


def train_examples(names: list[str] | tuple[str, ...]) -> list[tuple[Task, Example]]:
    """Every training example of the tasks, a split shared by several of them taken once."""
    out: list[tuple[Task, Example]] = []
    shared: set[str] = set()
    for task in map(get, names):
        data = load(task)
        if data.shared_train:
            if data.shared_train in shared:
                continue
            shared.add(data.shared_train)
        out += [(task, ex) for ex in data.train]
    return out


def describe() -> list[str]:
    """One line per task for ``bench list tasks``: name, family, choices, train split, description.

    Reads no data, so listing stays instant and works without the data folder.
    """
    lines = []
    for t in _all().values():
        choices = "numeric answer" if t.answer_type == "number" else f"{t.extra.get('n_choices', '?')} choices"
        train = f"train: {t.extra.get('train_source', '?')}"
        lines.append(f"{t.name:<11} {t.family:<12} {choices:<24} {train:<24} {t.description}")
    lines.append("suites: " + "; ".join(f"{s} = {','.join(m)}" for s, m in SUITES.items()))
    lines.append("also: file:PATH (LLM-Adapters-format .json, or a folder with test.json [+ train.json]; "
                 "optional task.yaml), lm-eval:NAME (an lm-evaluation-harness task; --eval-backend lm-eval)")
    return lines
