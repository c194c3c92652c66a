"""The eight commonsense tasks of the LLM-Adapters benchmark, from its records or the hub.

LLM-Adapters stores every item as ``{instruction, input, output, answer}`` with the options
embedded in ``instruction`` ("...question: Q\\n\\nAnswer1: a Answer2: b\\n\\nAnswer format:
answer1/answer2"). We parse that back into (question, choices, gold) for the likelihood protocol
and keep the record for the generation protocol. HellaSwag comes as a text file; we build an
LLM-Adapters-style instruction for it so both protocols treat all eight tasks alike. Hub rows are
first converted to the same record format (``tasks.hub``), so one parser serves both sources.
"""
from __future__ import annotations

import bz2
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from tasks import hub, llm_adapters, sources
from tasks.base import Example, Task, TaskData
from tasks.sources import DataError, DataSource
from tasks.splits import carve

HELLASWAG_FILE = "hellaswag/hellaswag_val_full.txt.bz2"
BOOLQ_WORDS = ("no", "yes")  # likelihood continuations; index 1 <=> answer "true"


@dataclass(frozen=True)
class Spec:
    name: str
    folder: str  # LLM-Adapters dataset folder ("" for hellaswag, which has its own file)
    header: str  # instruction text before the question
    vocabulary: tuple[str, ...]  # answer labels the generation protocol extracts
    n_choices: str
    has_train: bool
    description: str
    format_requests: Callable[[Example], list[tuple[str, str]]] | None = None

    def files(self) -> list[str]:
        if not self.folder:
            return [HELLASWAG_FILE]
        base = f"llm-adapters/dataset/{self.folder}"
        return [f"{base}/test.json"] + ([f"{base}/train.json"] if self.has_train else [])


def boolq_requests(ex: Example) -> list[tuple[str, str]]:
    return [(f"{ex.question}?\nAnswer:", f" {w}") for w in ex.choices]


def hellaswag_requests(ex: Example) -> list[tuple[str, str]]:
    return [(ex.question, f" {e}") for e in ex.choices]


def winogrande_requests(ex: Example) -> list[tuple[str, str]]:
    """lm-eval's partial scoring: the option fills the blank in the context; the rest is scored."""
    i = ex.question.index("_")
    rest = " " + ex.question[i + 1:].strip()
    return [(ex.question[:i] + option, rest) for option in ex.choices]


_ASK = "Please choose the correct answer to the question: "
_ANSWERS = tuple(f"answer{k}" for k in range(1, 6))
SPECS: dict[str, Spec] = {s.name: s for s in [
    Spec("boolq", "boolq", "Please answer the following question with true or false, question: ", ("true", "false"),
         "2", True, "BoolQ yes/no questions, question only (no passage), as in LLM-Adapters", boolq_requests),
    Spec("piqa", "piqa", "Please choose the correct solution to the question: ", ("solution1", "solution2"),
         "2", False, "PIQA physical commonsense: pick the right solution for a goal"),
    Spec("siqa", "social_i_qa", _ASK, _ANSWERS[:3],
         "3", False, "Social IQa: social situations, pick the right reaction or motivation"),
    Spec("hellaswag", "", hub.HELLASWAG_HEADER,
         tuple(f"ending{k}" for k in range(1, 5)),
         "4", False, "HellaSwag validation: pick the right continuation of a scene", hellaswag_requests),
    Spec("winogrande", "winogrande",
         "Please choose the correct answer to fill in the blank to complete the given sentence: ",
         ("option1", "option2"), "2", False, "WinoGrande dev: fill the blank (partial scoring)", winogrande_requests),
    Spec("arc_e", "ARC-Easy", _ASK, _ANSWERS, "3-5 (mostly 4)", True, "ARC-Easy grade-school science questions"),
    Spec("arc_c", "ARC-Challenge", _ASK, _ANSWERS, "3-5 (mostly 4)", True, "ARC-Challenge: the hard ARC questions"),
    Spec("obqa", "openbookqa", _ASK, _ANSWERS[:4], "4", True, "OpenBookQA elementary science questions"),
]}


def parse_instruction(instruction: str, header: str) -> tuple[str, tuple[str, ...], list[str]]:
    """(question, options, answer labels) from an LLM-Adapters instruction; ValueError if it does not fit.

    Options are found label by label ("Answer1: ", then "Answer2: " after it, ...) because the
    separators vary (a space, or a blank line in PIQA).
    """
    body, sep, fmt = instruction.rpartition("Answer format: ")
    if not sep:
        raise ValueError("no 'Answer format:' in instruction")
    labels = fmt.strip().split("/")
    if not body.startswith(header):
        raise ValueError(f"instruction does not start with {header!r}")
    body = body[len(header):].rstrip()
    if labels == ["true", "false"]:
        return body, (), labels
    names = [label[:1].upper() + label[1:] for label in labels]
    start = body.find(f"\n\n{names[0]}: ")
    if start < 0:
        raise ValueError(f"no '{names[0]}:' option after the question")
    question, pos, options = body[:start], start + 2, []
    for k, name in enumerate(names):
        begin = pos + len(name) + 2
        end = body.find(f"{names[k + 1]}: ", begin) if k + 1 < len(names) else len(body)
        if end < 0:
            raise ValueError(f"no '{names[k + 1]}:' option")
        option = body[begin:end].strip()
        if not option:
            raise ValueError(f"option {name} is empty")
        options.append(option)
        pos = end
    return question, tuple(options), labels


def parse_record(spec: Spec, rec: Any, ex_id: str) -> Example:
    """One LLM-Adapters record -> Example; ValueError says what is wrong with it."""
    llm_adapters.check_record(rec)
    question, options, labels = parse_instruction(rec["instruction"], spec.header)
    if rec["answer"] not in labels:
        raise ValueError(f"answer {rec['answer']!r} is not among the choices {labels}")
    if spec.name == "boolq":
        question, options, gold = question.removesuffix("?"), BOOLQ_WORDS, int(rec["answer"] == "true")
    else:
        gold = labels.index(rec["answer"])
    if spec.name == "winogrande" and "_" not in question:
        raise ValueError("winogrande sentence has no '_' blank")
    return Example(ex_id, question, options, gold, rec["instruction"], rec["output"], rec["answer"])


def parse_records(spec: Spec, records: Any, where: str, split: str) -> list[Example]:
    if not isinstance(records, list):
        raise DataError(f"{where}: expected a JSON list of records, found {type(records).__name__}")
    out = []
    for i, rec in enumerate(records):
        try:
            out.append(parse_record(spec, rec, f"{split}-{i}"))
        except ValueError as err:
            raise DataError(f"{where}: record {i}: {err}") from None
    return out


def read_hellaswag(path: Path) -> list[dict[str, str]]:
    """Records from the 6-lines-per-item text file (context, gold index 0-3, four endings)."""
    try:
        lines = bz2.decompress(path.read_bytes()).decode("utf-8").split("\n")
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: cannot decompress/decode ({err})") from None
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) % 6:
        raise DataError(f"{path}: {len(lines)} lines, not a multiple of 6 (context, label, 4 endings)")
    records = []
    for i in range(len(lines) // 6):
        ctx, label, *endings = lines[6 * i: 6 * i + 6]
        if label not in {"0", "1", "2", "3"} or not ctx.strip() or not all(e.strip() for e in endings):
            raise DataError(f"{path}: record {i} (line {6 * i + 1}): expected context, label 0-3, 4 non-empty endings")
        records.append(hub.hellaswag_record(ctx, endings, int(label)))
    return records


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: not valid JSON ({err})") from None


def load_local(spec: Spec, source: DataSource) -> TaskData:
    """Verified files -> splits. Official train items that repeat a test item are dropped, and
    tasks without a train file get a seed-independent carve, so nothing evaluated is trained on."""
    checksums, parsed = {}, {}
    for rel in spec.files():
        path, checksums[rel] = source.checked(rel)
        records = read_hellaswag(path) if spec.name == "hellaswag" else _read_json(path)
        parsed[rel] = parse_records(spec, records, str(path), "train" if rel.endswith("train.json") else "test")
    test_rel = spec.files()[0]
    test = parsed[test_rel]
    if spec.has_train:
        seen = {ex.instruction for ex in test}
        train_all = parsed[spec.files()[1]]
        train = [ex for ex in train_all if ex.instruction not in seen]
        n_dropped = len(train_all) - len(train)
        dropped = f"; {n_dropped} train items identical to test items dropped" if n_dropped else ""
        note = f"train: {spec.files()[1]} ({len(train)} items{dropped}); test: {test_rel} ({len(test)} items)"
    else:
        train_idx, test_idx, carve_note = carve([ex.instruction for ex in test])
        train, test = [test[i] for i in train_idx], [test[i] for i in test_idx]
        note = f"{carve_note} (no offline train split; source {test_rel}; ids are test-file indices)"
    return TaskData(train, test, str(source.root / Path(test_rel).parent), checksums, note)


def load(spec: Spec, source: DataSource) -> TaskData:
    """Local files when present; the hub only when they are missing and the user opted in."""
    missing = source.missing(spec.files())
    if not missing:
        return load_local(spec, source)
    hint = hub.HUB[spec.name].label()
    if not source.hub:
        raise source.not_found(missing[0], spec.name, hint)
    try:
        raw = hub.records(spec.name)
    except DataError as err:
        raise DataError(f"{spec.name}: data not found: {', '.join(missing)}, and the hub fallback failed: {err}") from None
    parsed = {split: parse_records(spec, recs, f"hub {hint} {split}", split) for split, recs in raw.splits.items()}
    note = (f"hub: {hint}, train split {raw.train_split!r} ({len(parsed['train'])} items), "
            f"test split {raw.test_split!r} ({len(parsed['test'])} items)")
    return TaskData(parsed["train"], parsed["test"], f"hub:{hint}", raw.fingerprints, note)


def make_task(spec: Spec) -> Task:
    return Task(
        name=spec.name,
        family="commonsense",
        description=spec.description,
        load=lambda: load(spec, sources.current()),
        vocabulary=spec.vocabulary,
        format_requests=spec.format_requests,
        extra={"n_choices": spec.n_choices, "train_source": "train.json" if spec.has_train else "carved from test"},
    )


TASKS = [make_task(s) for s in SPECS.values()]
