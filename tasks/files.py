"""Any LLM-Adapters-format file as a task: ``--tasks file:PATH``, no code needed.

PATH is a ``.json`` list of ``{instruction, input, output, answer}`` records (evaluation
only), or a folder holding ``test.json`` and optionally ``train.json`` (train items whose
instruction repeats a test item are dropped, so nothing evaluated is trained on).

How answers are read is inferred from the records, or given in a sidecar next to the data
(``<name>.task.yaml`` / ``.json`` beside a file, or ``task.yaml`` / ``task.json`` in its folder)
with keys ``answer_type`` (``choice`` or ``number``), ``vocabulary`` (the answer labels),
``max_new_tokens`` and ``description``. Inference: every answer a number -> ``number``; the
options the instructions list ("Answer format: a/b/c", or AQuA's "Answer Choices: (A) ..
(E) ..."), else labels sharing a prefix (answer1..answerN, option1..), or true/false ->
``choice`` with that vocabulary: labels come from the listed options, never from the gold
answers alone (a letter that is never the answer is still a possible answer). The generation
budget follows LLM-Adapters: 32 new tokens when every reference output is the commonsense
one-liner "the correct answer is X", else 256 (their math ``evaluate.py``, which evaluates
AQuA's worked solutions too). When every instruction lists its
options LLM-Adapters-style ("Answer1: ... Answer2: ..."), the likelihood protocol is offered
too (the question asked is the instruction without LLM-Adapters' opening sentence and options);
otherwise the task is generation-only. Every file read is recorded with its SHA-256.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tasks import configured, sources, taskfile
from tasks.base import Example, Task, TaskData
from tasks.llm_adapters import listed_labels, parse_instruction, parse_number
from tasks.sources import DataError

SIDECAR_KEYS = {"answer_type", "vocabulary", "max_new_tokens", "description"}
MAX_INFERRED_LABELS = 10
ONE_LINER = re.compile(r"the correct answer is \S+")  # LLM-Adapters' commonsense reference outputs


def known_headers() -> tuple[str, ...]:
    """LLM-Adapters' instruction openings (from the built-in task files): stripped from the question
    the likelihood protocol asks."""
    return tuple(dict.fromkeys(s.data_header for s in taskfile.builtin()[0].values() if s.data_header))
_LABEL = re.compile(r"([A-Za-z_]+?)(\d+)")


def _locate(spec: str, path: Path) -> tuple[Path, Path | None, Path | None]:
    """(test file, train file or None, sidecar or None) for a ``file:`` argument (resolved ``path``)."""
    if path.is_dir():
        test, train = path / "test.json", path / "train.json"
        if not test.is_file():
            raise DataError(f"file:{spec}: folder {path} has no test.json")
        candidates = [path / n for n in ("task.yaml", "task.yml", "task.json")]
        return test, (train if train.is_file() else None), next((c for c in candidates if c.is_file()), None)
    if not path.is_file():
        raise DataError(f"file:{spec}: no such file or folder ({path})")
    candidates = [path.with_name(f"{path.stem}.task.{ext}") for ext in ("yaml", "yml", "json")]
    candidates += [path.parent / n for n in ("task.yaml", "task.yml", "task.json")]
    return path, None, next((c for c in candidates if c.is_file()), None)


def _read_sidecar(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".json":
            config = json.loads(text)
        else:
            import yaml

            config = yaml.safe_load(text)
    except Exception as err:  # noqa: BLE001 - any parse failure is the same user error
        raise DataError(f"{path}: cannot read the task config ({type(err).__name__}: {err})") from None
    config = config or {}
    if not isinstance(config, dict) or set(config) - SIDECAR_KEYS:
        raise DataError(f"{path}: expected a mapping with keys among {sorted(SIDECAR_KEYS)}")
    if config.get("answer_type", "choice") not in ("choice", "number"):
        raise DataError(f"{path}: answer_type must be 'choice' or 'number'")
    vocab = config.get("vocabulary")
    if vocab is not None and (not isinstance(vocab, list) or not vocab or not all(isinstance(v, str) and v for v in vocab)):
        raise DataError(f"{path}: vocabulary must be a non-empty list of labels")
    return config


def infer(records: list[dict[str, str]], where: str) -> tuple[str, tuple[str, ...]]:
    """(answer_type, vocabulary) read off the records; DataError when they do not tell."""
    answers = [r["answer"].strip() for r in records]
    if all(parse_number(a.replace(",", "")) is not None for a in answers):
        return "number", ()
    listed = list(dict.fromkeys(label for r in records for label in listed_labels(r["instruction"])))
    if listed and set(answers) <= set(listed):
        return "choice", tuple(listed)
    numbered = [_LABEL.fullmatch(a) for a in answers]
    if all(numbered) and len({m.group(1) for m in numbered}) == 1:
        prefix, top = numbered[0].group(1), max(int(m.group(2)) for m in numbered)
        return "choice", tuple(f"{prefix}{k}" for k in range(1, top + 1))
    if set(answers) <= {"true", "false"}:
        return "choice", ("true", "false")
    distinct = sorted(set(answers))
    if len(distinct) <= MAX_INFERRED_LABELS:
        return "choice", tuple(distinct)
    raise DataError(f"{where}: cannot infer the answer type ({len(distinct)} distinct non-numeric answers); "
                    f"add a task.yaml with answer_type and vocabulary next to it")


def to_example(rec: dict[str, str], ex_id: str, answer_type: str, vocabulary: tuple[str, ...]) -> Example:
    """One record -> Example; choices are parsed when the instruction lists them (likelihood)."""
    answer = rec["answer"].strip()
    common = dict(instruction=rec["instruction"], output=rec["output"], answer=answer, input=rec.get("input", ""),
                  labels=tuple(listed_labels(rec["instruction"])))
    if answer_type == "number":
        gold = answer.replace(",", "")
        if parse_number(gold) is None:
            raise ValueError(f"answer {rec['answer']!r} is not a number")
        return Example(ex_id, rec["instruction"], (), gold, **common)
    if answer not in vocabulary:
        raise ValueError(f"answer {answer!r} is not among the choices {list(vocabulary)}")
    header = next((h for h in known_headers() if rec["instruction"].startswith(h)), "")
    try:
        question, options, labels = parse_instruction(rec["instruction"], header)
        options = options or tuple(labels)  # true/false: the labels are the choices
        if answer in labels and len(options) == len(labels):
            return Example(ex_id, question, options, labels.index(answer), **common)
    except ValueError:
        pass
    return Example(ex_id, rec["instruction"], (), vocabulary.index(answer), **common)


def _examples(path: Path, records: list[dict[str, str]], split: str, answer_type: str,
              vocabulary: tuple[str, ...]) -> list[Example]:
    out = []
    for i, rec in enumerate(records):
        try:
            out.append(to_example(rec, f"{split}-{i}", answer_type, vocabulary))
        except ValueError as err:
            raise DataError(f"{path}: record {i}: {err}") from None
    return out


def budget(records: list[dict[str, str]]) -> int:
    """LLM-Adapters' generation budget for these records: one-line answers 32, worked solutions 256."""
    one_liners = all(ONE_LINER.fullmatch(r["output"].strip()) for r in records)
    return taskfile.CHOICE_BUDGET if one_liners else taskfile.NUMBER_BUDGET


def make_task(spec: str) -> Task:
    """Read, check and describe the file now: a file task is fully defined by its data."""
    resolved = Path(spec).expanduser().resolve()
    test_path, train_path, sidecar = _locate(spec, resolved)
    config = _read_sidecar(sidecar) if sidecar else {}
    records = {"test": configured.read_llm_adapters(test_path)}
    if train_path:
        records["train"] = configured.read_llm_adapters(train_path)
    where = str(test_path)
    if "answer_type" in config or "vocabulary" in config:
        answer_type = config.get("answer_type", "choice")
        vocabulary = tuple(config.get("vocabulary") or ())
        if answer_type == "choice" and not vocabulary:
            vocabulary = infer(records["test"], where)[1]
    else:
        answer_type, vocabulary = infer(records["test"] + records.get("train", []), where)
    paths = {"test": test_path, "train": train_path}
    parsed = {split: _examples(paths[split], recs, split, answer_type, vocabulary) for split, recs in records.items()}
    test = parsed["test"]
    seen = {ex.instruction for ex in test}
    train = [ex for ex in parsed.get("train", []) if ex.instruction not in seen]
    checksums = {str(p): sources.sha256(p) for p in (test_path, train_path, sidecar) if p}
    if train_path:
        note = (f"train: {train_path} ({len(train)} items, {len(parsed['train']) - len(train)} repeating test "
                f"items dropped); test: {test_path} ({len(test)} items)")
    else:
        note = f"test: {test_path} ({len(test)} items); no train.json, so evaluation only"
    likelihood_ok = answer_type == "choice" and all(ex.choices for split in parsed.values() for ex in split)
    data = TaskData(train, test, str(test_path), checksums, note)
    return Task(
        name=f"file:{resolved}",
        family="file",
        description=config.get("description") or f"records of {test_path}",
        load=lambda: data,
        vocabulary=vocabulary,
        answer_type=answer_type,  # type: ignore[arg-type]
        protocols=("likelihood", "generate") if likelihood_ok else ("generate",),
        max_new_tokens=int(config.get("max_new_tokens") or budget(records["test"])),
        extra={"train_source": "train.json" if train_path else "none"},
    )
