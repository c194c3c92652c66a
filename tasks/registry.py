"""Name -> Task, suites, and cached loading; every task and suite is a file.

Built-in tasks and suites are the YAML files in ``tasks/configs`` (``tasks.taskfile``); adding a
task is adding one file there. Three kinds of task are made on demand from their name: a path
to a task file (``--tasks my/task.yaml``; the task's name is then the file's absolute path, so
that a worker process can read it again, and its ``task`` field is its report header), ``file:PATH`` (any LLM-Adapters-format file with no
task file at all, ``tasks.files``) and ``lm-eval:NAME`` (a task of lm-evaluation-harness,
``tasks.lm_eval_bridge``). Data is loaded once per process and data source.
"""
from __future__ import annotations

import re
from pathlib import Path

from tasks import configured, sources, taskfile
from tasks.base import Example, Task, TaskData, UnknownTask
from tasks.taskfile import SuiteSpec, TaskSpec

PREFIXES = ("file:", "lm-eval:")
TASK_FILE_SUFFIXES = (".yaml", ".yml")

_tasks: dict[str, Task] = {}  # every task made so far, under its name (and the spelling it was asked by)
_specs: dict[str, TaskSpec] = {}  # task file of every task that has one
_loaded: dict[tuple, TaskData] = {}


def suites() -> dict[str, list[str]]:
    """Suite name -> its tasks, in the suite file's order."""
    return {name: list(s.tasks) for name, s in taskfile.builtin()[1].items()}


def names() -> list[str]:
    """Built-in task names in report column order, then the file-free synthetic task."""
    return report_order(list(taskfile.builtin()[0])) + ["synthetic"]


def _valid() -> str:
    return (f"valid tasks: {', '.join(names())}; suites: {', '.join(suites())}; or a task file (path/to/task.yaml), "
            f"file:PATH (an LLM-Adapters-format file) or lm-eval:NAME (an lm-evaluation-harness task)")


def _suite_of(spec: TaskSpec) -> tuple[SuiteSpec, list[TaskSpec]] | None:
    if not isinstance(spec.train, str) or not spec.train.startswith("suite:"):
        return None
    name = spec.train.split(":", 1)[1]
    tasks, all_suites = taskfile.builtin()
    if name not in all_suites or not all_suites[name].train:
        raise taskfile.TaskFileError(f"{spec.file}: field 'data.train.suite': {name!r} is not a suite with a "
                                     f"shared train split (those: {', '.join(s for s, v in all_suites.items() if v.train)})")
    suite = all_suites[name]
    return suite, [tasks[t] for t in suite.tasks]


def _from_spec(spec: TaskSpec, name: str) -> Task:
    _suite_of(spec)  # an unknown suite is a task file error now, not at load
    task = configured.make_task(spec, name, lambda: configured.load(spec, sources.current(), _suite_of(spec)))
    _specs[name] = spec
    return task


def _make(name: str) -> Task:
    builtin = taskfile.builtin()[0]
    if name in builtin:
        return _from_spec(builtin[name], name)
    if name == "synthetic":
        from tasks import synthetic

        return synthetic.TASK
    if name.endswith(TASK_FILE_SUFFIXES) and not name.startswith(PREFIXES):
        path = Path(name).expanduser().resolve()
        spec = taskfile.read(path) if path.is_file() else None
        if spec is None:
            raise UnknownTask(f"task file {path} not found")
        if not isinstance(spec, TaskSpec):
            raise taskfile.TaskFileError(f"{path}: a suite file; --tasks takes task files (or built-in suite names)")
        if spec.name in builtin or spec.name in suites():
            raise taskfile.TaskFileError(f"{path}: field 'task': {spec.name!r} is a built-in name; choose another")
        return _from_spec(spec, str(path))  # the path names it, so a worker process finds it again
    if name.startswith("file:"):
        from tasks import files

        return files.make_task(name[len("file:"):])
    if name.startswith("lm-eval:"):
        from tasks import lm_eval_bridge

        return lm_eval_bridge.make_task(name[len("lm-eval:"):])
    raise UnknownTask(f"unknown task {name!r}; {_valid()}")


def get(name: str) -> Task:
    if name not in _tasks:
        task = _make(name)
        task = _tasks.get(task.name, task)  # the same task asked for by another spelling (a relative path)
        _tasks[name] = _tasks[task.name] = task
    return _tasks[name]


def expand(spec: str) -> list[str]:
    """'commonsense' or 'boolq,arc_e' (suites, tasks, task files; comma- or space-separated) -> task names."""
    out: list[str] = []
    all_suites = suites()
    for part in filter(None, re.split(r"[,\s]+", spec.strip())):
        for name in all_suites.get(part, [part]):
            name = get(name).name  # raises UnknownTask with the valid names; paths made absolute
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
            sizes = [len(ex.choices) or len(ex.labels) or len(task.vocabulary) for ex in data.test]
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


def spec(name: str) -> TaskSpec | None:
    """The task file behind a task (None for file:, lm-eval: and synthetic tasks)."""
    return _specs.get(get(name).name)


def report_headers() -> dict[str, str]:
    """Task name -> its report column title, from the task files (built-in and any read so far)."""
    return {**{name: s.header for name, s in _specs.items()},
            **{name: s.header for name, s in taskfile.builtin()[0].items()}}


def report_order(names_: list[str] | set[str]) -> list[str]:
    """Task names in report column order: task files' ``report.column``, then unknown names sorted."""
    known = taskfile.builtin()[0]
    return sorted(names_, key=lambda n: (0, known[n].column, n) if n in known else (1, 0, n))


def describe() -> list[str]:
    """One line per task for ``bench list tasks``: name, family, protocols, train split, description.

    Reads the task files only (no data), so listing stays instant and works without the data folder.
    """
    lines = []
    for name in names():
        t = get(name)
        answer = "numeric answer" if t.answer_type == "number" else "choices"
        lines.append(f"{t.name:<11} {t.family:<12} {answer:<15} {'/'.join(t.protocols):<20} "
                     f"train: {t.extra.get('train_source', '?'):<17} {t.description}")
    lines.append("suites: " + "; ".join(f"{s} = {','.join(m)}" for s, m in suites().items()))
    lines.append("also: path/to/task.yaml (your own benchmark, see the README), file:PATH (LLM-Adapters-format "
                 ".json, or a folder with test.json [+ train.json]; optional task.yaml), lm-eval:NAME "
                 "(an lm-evaluation-harness task; --eval-backend lm-eval)")
    return lines
