"""Task and suite files: the YAML that defines a task, read and checked into plain dataclasses.

A task is data, as in lm-evaluation-harness (one YAML per task, one configurable task class,
``tasks.configured``). The built-in tasks live in ``tasks/configs/``; ``--tasks path/to/x.yaml``
reads a user's file with the same schema. Every problem with a file is one ``TaskFileError``
line naming the file and the field, so a typo never surfaces as a traceback mid-run.

Task file (every key but ``task`` and ``data.test`` optional; the README has examples)::

    task: arc_e                               # the name --tasks uses (a user's file: its report header)
    description: ARC-Easy grade-school science questions
    family: commonsense
    report: {header: ARC-e, column: 6}        # report column title and position
    answer: choice                            # or number (math: generation only)
    data:
      root: data_dir                          # relative paths: data_dir, or task_file (default)
      format: llm-adapters                    # llm-adapters | jsonl | hellaswag-text
      header: "Please choose ..."             # LLM-Adapters' opening sentence of an instruction
      test: {file: llm-adapters/dataset/ARC-Easy/test.json, sha256: 3f32...}
      train: {file: ..., sha256: ...}         # or carve (a seeded part of test), none, {suite: math}
      fields: {question: goal, choices: [sol1, sol2], gold: label}   # jsonl / text records
      preprocess: hellaswag                   # a named doc transform (tasks.configured.PREPROCESS)
      hub: {path: allenai/ai2_arc, name: ARC-Easy, test_split: test, train_split: train, fields: {...}}
    likelihood:                               # lm-eval's defaults below; false = generation only
      form: per_choice                        # or partial (the choice fills the "_" of the question)
      context: "Question: {question}\\nAnswer:"
      continuation: " {choice}"
      metrics: [acc, acc_norm]
    generate:
      max_new_tokens: 32
      labels: answer                          # answer1..answerN per listed option, or one label per choice
      vocabulary: [answer1, answer2, ...]     # the extraction vocabulary, when fixed for the task
      instruction: "{header}{question}\\n\\n{options}\\n\\nAnswer format: {formats}"
      option_sep: " "

A suite file has ``suite``, ``tasks`` (a list of names) and optionally ``train``: a training set
shared by its tasks (``sources``: files as above plus ``format``/``preprocess``/``hub``;
``held_out``: files whose questions, like every member's test questions, are never trained on).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from tasks.sources import DataError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
FORMATS = ("llm-adapters", "jsonl", "hellaswag-text")
PREPROCESS = ("hellaswag", "gsm8k")
METRICS = ("acc", "acc_norm")
# a record's field mapping: dotted paths or {templates}; choice_texts are fixed texts (BoolQ's no/yes);
# gold is a field holding the index (minus gold_base) or {key: .., in: ..} (the key's position in a list)
FIELD_KEYS = {"question", "choices", "choice_texts", "gold", "gold_base"}
DEFAULT_CONTEXT = "Question: {question}\nAnswer:"
DEFAULT_CONTINUATION = " {choice}"
DEFAULT_INSTRUCTION = "{header}{question}\n\n{options}\n\nAnswer format: {formats}"
CHOICE_BUDGET, NUMBER_BUDGET = 32, 256  # LLM-Adapters: commonsense_evaluate.py, evaluate.py (math, AQuA)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class TaskFileError(DataError):
    """A task or suite file that does not fit the schema; the message names the file and field."""


@dataclass(frozen=True)
class FileRef:
    """One data file: where it is, its pinned SHA-256 (optional for user files), a labels file."""

    path: str
    sha256: str = ""
    labels: str = ""  # a separate labels file, one label per line (PIQA's valid-labels.lst)
    labels_sha256: str = ""
    format: str = ""  # suite train sources only; task files give it once under data
    preprocess: str = ""
    hub: dict[str, Any] = field(default_factory=dict)  # suite train sources: {path, name, split}


@dataclass(frozen=True)
class HubRef:
    path: str
    name: str | None
    test_split: str
    train_split: str
    fields: dict[str, Any]

    def label(self) -> str:
        return self.path + (f" ({self.name})" if self.name else "")


@dataclass(frozen=True)
class TaskSpec:
    name: str
    file: Path
    description: str
    family: str
    header: str  # report column title
    column: int  # report column position
    answer: str  # "choice" or "number"
    root: str  # "data_dir" or "task_file"
    format: str
    data_header: str  # LLM-Adapters' instruction opening
    test: FileRef
    train: FileRef | str | None  # a file, "carve", {suite} -> "suite:NAME", or None
    fields: dict[str, Any]
    preprocess: str
    hub: HubRef | None
    likelihood: dict[str, Any] | None  # form, context, continuation, metrics
    max_new_tokens: int
    labels: str | tuple[str, ...]
    vocabulary: tuple[str, ...]
    instruction: str
    option_sep: str

    def base_dir(self, data_dir: Path) -> Path:
        return data_dir if self.root == "data_dir" else self.file.parent


@dataclass(frozen=True)
class SuiteSpec:
    name: str
    file: Path
    tasks: tuple[str, ...]
    train: tuple[FileRef, ...] = ()
    held_out: tuple[FileRef, ...] = ()


class _Fields:
    """Typed access to one mapping of a file; every failure names the file and the dotted field."""

    def __init__(self, file: Path, data: Any, where: str = "") -> None:
        self.file, self.where = file, where
        if not isinstance(data, dict):
            self.fail("", f"expected a mapping, found {type(data).__name__}")
        self.data = data

    def fail(self, key: str, problem: str) -> None:
        name = f"{self.where}.{key}" if self.where and key else (self.where or key)
        raise TaskFileError(f"{self.file}: " + (f"field {name!r}: " if name else "") + problem)

    def check_keys(self, allowed: set[str]) -> None:
        extra = sorted(set(self.data) - allowed)
        if extra:
            self.fail(extra[0], f"unknown key; valid keys here: {', '.join(sorted(allowed))}")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = None, required: bool = False) -> Any:
        if key not in self.data or self.data[key] is None:
            if required:
                self.fail(key, "missing (required)")
            return default
        value = self.data[key]
        if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
            names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            self.fail(key, f"expected {names}, found {type(value).__name__} {value!r}")
        return value

    def choice(self, key: str, valid: tuple[str, ...], default: str) -> str:
        value = self.get(key, str, default)
        if value not in valid:
            self.fail(key, f"{value!r} is not one of {', '.join(valid)}")
        return value

    def sub(self, key: str) -> "_Fields | None":
        value = self.data.get(key)
        return None if value is None else _Fields(self.file, value, f"{self.where}.{key}" if self.where else key)


def read_yaml(path: Path) -> Any:
    import yaml

    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise TaskFileError(f"{path}: cannot read the task file ({err.strerror})") from None
    except yaml.YAMLError as err:
        raise TaskFileError(f"{path}: not valid YAML ({' '.join(str(err).split())})") from None


def _file_ref(f: _Fields, key: str, suite_source: bool = False) -> FileRef | None:
    raw = f.data.get(key)
    if raw is None:
        return None
    if isinstance(raw, str):
        return FileRef(raw)
    sub = f.sub(key)
    allowed = {"file", "sha256", "labels", "labels_sha256"}
    if suite_source:
        allowed |= {"format", "preprocess", "hub"}
    sub.check_keys(allowed)
    ref = FileRef(sub.get("file", str, required=True), sub.get("sha256", str, ""), sub.get("labels", str, ""),
                  sub.get("labels_sha256", str, ""))
    if suite_source:
        hub = sub.get("hub", dict, {})
        if hub and not (isinstance(hub.get("path"), str) and isinstance(hub.get("split"), str)):
            sub.fail("hub", "expected {path: <hub id>, name: <config, optional>, split: <split>}")
        ref = FileRef(ref.path, ref.sha256, ref.labels, ref.labels_sha256, sub.choice("format", FORMATS, "llm-adapters"),
                      sub.choice("preprocess", ("",) + PREPROCESS, ""), hub)
    return ref


def _likelihood(f: _Fields, answer: str) -> dict[str, Any] | None:
    """The likelihood protocol's settings: lm-eval's defaults for a choice task unless ``false``."""
    if f.data.get("likelihood") is False or answer == "number" and "likelihood" not in f.data:
        return None
    sub = f.sub("likelihood") or _Fields(f.file, {}, "likelihood")
    sub.check_keys({"form", "context", "continuation", "metrics"})
    metrics = sub.get("metrics", list, list(METRICS))
    if not metrics or any(m not in METRICS for m in metrics):
        sub.fail("metrics", f"expected a non-empty list among {', '.join(METRICS)}, found {metrics!r}")
    form = sub.choice("form", ("per_choice", "partial"), "per_choice")
    if form == "partial" and "acc_norm" in metrics:
        sub.fail("metrics", "partial scoring has one continuation shared by every choice, so acc_norm would "
                            "repeat acc (lm-eval reports acc only); use [acc]")
    return {"form": form,
            "context": sub.get("context", str, DEFAULT_CONTEXT),
            "continuation": sub.get("continuation", str, DEFAULT_CONTINUATION), "metrics": tuple(metrics)}


def parse_task(path: Path, raw: dict[str, Any]) -> TaskSpec:
    f = _Fields(path, raw)
    f.check_keys({"task", "description", "family", "report", "answer", "data", "likelihood", "generate"})
    name = f.get("task", str, required=True)
    if not _NAME.fullmatch(name):
        f.fail("task", f"{name!r}: use letters, digits, '_', '-' and '.'")
    answer = f.choice("answer", ("choice", "number"), "choice")
    report = f.sub("report") or _Fields(path, {}, "report")
    report.check_keys({"header", "column"})
    data = f.sub("data")
    if data is None:
        f.fail("data", "missing (required): where the items come from")
    data.check_keys({"root", "format", "header", "test", "train", "fields", "preprocess", "hub"})
    test = _file_ref(data, "test")
    if test is None:
        data.fail("test", "missing (required): the file of evaluated items")
    train: FileRef | str | None
    raw_train = data.data.get("train")
    if raw_train in (None, "none"):
        train = None
    elif raw_train == "carve":
        train = "carve"
    elif isinstance(raw_train, dict) and set(raw_train) == {"suite"}:
        train = f"suite:{data.sub('train').get('suite', str, required=True)}"
    else:
        train = _file_ref(data, "train")
    fmt = data.choice("format", FORMATS, "llm-adapters")
    fields = data.get("fields", dict, {})
    if (mapping := data.sub("fields")) is not None:
        mapping.check_keys(FIELD_KEYS)
    if fmt != "llm-adapters" and not fields and not data.get("preprocess", str):
        data.fail("fields", f"format {fmt} needs a field mapping (question, choices, gold)")
    hub = None
    if (h := data.sub("hub")) is not None:
        h.check_keys({"path", "name", "test_split", "train_split", "fields"})
        if (mapping := h.sub("fields")) is not None:
            mapping.check_keys(FIELD_KEYS)
        hub = HubRef(h.get("path", str, required=True), h.get("name", str), h.get("test_split", str, "test"),
                     h.get("train_split", str, "train"), h.get("fields", dict, {}))
    gen = f.sub("generate") or _Fields(path, {}, "generate")
    gen.check_keys({"max_new_tokens", "labels", "vocabulary", "instruction", "option_sep"})
    labels = gen.get("labels", (str, list), "answer")
    vocabulary = gen.get("vocabulary", list, [])
    for key, value in (("labels", labels if isinstance(labels, list) else [labels]), ("vocabulary", vocabulary)):
        if not all(isinstance(v, str) and v for v in value):
            gen.fail(key, f"expected non-empty text labels, found {value!r}")
    likelihood = _likelihood(f, answer)
    if answer == "number" and likelihood:
        f.fail("likelihood", "a number-answer task has no choices to score; remove it")
    budget = gen.get("max_new_tokens", int, NUMBER_BUDGET if answer == "number" else CHOICE_BUDGET)
    if budget < 1:
        gen.fail("max_new_tokens", f"must be positive, found {budget}")
    return TaskSpec(
        name=name, file=path, description=f.get("description", str, f"task file {path}"),
        family=f.get("family", str, "custom"), header=report.get("header", str, name),
        column=report.get("column", int, 1000), answer=answer,
        root=data.choice("root", ("data_dir", "task_file"), "task_file"), format=fmt,
        data_header=data.get("header", str, ""), test=test, train=train, fields=fields,
        preprocess=data.choice("preprocess", ("",) + PREPROCESS, ""), hub=hub, likelihood=likelihood,
        max_new_tokens=budget, labels=tuple(labels) if isinstance(labels, list) else labels,
        vocabulary=tuple(vocabulary), instruction=gen.get("instruction", str, DEFAULT_INSTRUCTION),
        option_sep=gen.get("option_sep", str, " "))


def parse_suite(path: Path, raw: dict[str, Any]) -> SuiteSpec:
    f = _Fields(path, raw)
    f.check_keys({"suite", "tasks", "train"})
    members = f.get("tasks", list, required=True)
    if not members or not all(isinstance(t, str) for t in members):
        f.fail("tasks", "expected a non-empty list of task names")
    train = f.sub("train")
    sources_, held = (), ()
    if train is not None:
        train.check_keys({"sources", "held_out"})
        for key in ("sources", "held_out"):
            train.get(key, list, [])
        sources_ = tuple(_file_ref(_Fields(path, {"s": s}, f"train.sources[{i}]"), "s", True)
                         for i, s in enumerate(train.data.get("sources") or []))
        held = tuple(_file_ref(_Fields(path, {"s": s}, f"train.held_out[{i}]"), "s", True)
                     for i, s in enumerate(train.data.get("held_out") or []))
    return SuiteSpec(f.get("suite", str, required=True), path, tuple(members), sources_, held)


def read(path: Path) -> TaskSpec | SuiteSpec:
    """One task or suite file."""
    raw = read_yaml(path)
    if not isinstance(raw, dict) or not ({"task", "suite"} & set(raw)):
        raise TaskFileError(f"{path}: field 'task': missing (a task file names its task; a suite file has 'suite')")
    return parse_suite(path, raw) if "suite" in raw else parse_task(path, raw)


@lru_cache(maxsize=1)
def builtin() -> tuple[dict[str, TaskSpec], dict[str, SuiteSpec]]:
    """Every file in ``tasks/configs``, read once per process; names must be unique."""
    tasks: dict[str, TaskSpec] = {}
    suites: dict[str, SuiteSpec] = {}
    for path in sorted(CONFIG_DIR.glob("*.yaml")):
        spec = read(path)
        table: dict = suites if isinstance(spec, SuiteSpec) else tasks
        if spec.name in tasks or spec.name in suites:
            raise TaskFileError(f"{path}: field {'suite' if table is suites else 'task'!r}: name {spec.name!r} "
                                f"is already defined")
        table[spec.name] = spec
    for suite in suites.values():
        unknown = [t for t in suite.tasks if t not in tasks]
        if unknown:
            raise TaskFileError(f"{suite.file}: field 'tasks': unknown task {unknown[0]!r}")
    return tasks, suites


def pinned_files() -> list[str]:
    """Every data file the built-in tasks and suites read from the data folder, with a pinned
    checksum: what a complete offline data folder holds (tests check for it)."""
    specs, suites = builtin()
    refs = [s.test for s in specs.values() if s.root == "data_dir"]
    refs += [s.train for s in specs.values() if s.root == "data_dir" and isinstance(s.train, FileRef)]
    refs += [r for suite in suites.values() for r in (*suite.train, *suite.held_out)]
    return sorted({r.path for r in refs if r.sha256})
