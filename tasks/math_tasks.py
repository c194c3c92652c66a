"""The math suite: GSM8K, AddSub, MultiArith, SingleEq, evaluated by generation.

Test sets are LLM-Adapters' ``dataset/<X>/test.json`` (the questions their tables use; their
GSM8K test file holds the same 1,319 items as the original release). All four tasks share one
training set, as in LLM-Adapters' math setting: the original GSM8K train split
(``gsm8k/train.jsonl``, ``question``/``answer`` with a final ``#### N``) converted to their
record format, plus ``ft-training_set/math_data.json``. About 2,260 of math_data's 3,260 items
are test items of these four sets, so every training item whose question (lower-cased,
punctuation and spacing ignored) occurs in any of the test files is dropped, as are repeats.

Math has no answer choices, so it has only the generation protocol: the last number of the
response, compared numerically (``tasks.generation``), with up to 256 new tokens
(LLM-Adapters' math ``evaluate.py``; 32 tokens would cut every worked solution before its
final "The answer is N").
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks import llm_adapters, sources
from tasks.base import Example, Task, TaskData
from tasks.llm_adapters import parse_number
from tasks.sources import DataError, DataSource

GSM8K_TRAIN, GSM8K_TEST = "gsm8k/train.jsonl", "gsm8k/test.jsonl"
MATH_DATA = "llm-adapters/ft-training_set/math_data.json"
TEST_FILES = {
    "gsm8k": "llm-adapters/dataset/gsm8k/test.json",
    "addsub": "llm-adapters/dataset/AddSub/test.json",
    "multiarith": "llm-adapters/dataset/MultiArith/test.json",
    "singleeq": "llm-adapters/dataset/SingleEq/test.json",
}
DESCRIPTIONS = {
    "gsm8k": "GSM8K grade-school math word problems (multi-step)",
    "addsub": "AddSub: addition/subtraction word problems",
    "multiarith": "MultiArith: multi-step arithmetic word problems",
    "singleeq": "SingleEq: single-equation word problems",
}
MAX_NEW_TOKENS = 256
POOL_NOTE = "gsm8k train + math_data.json"


def question_key(text: str) -> str:
    """Identity of a question across files that space and punctuate it differently."""
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: not valid JSON ({err})") from None


def _read_jsonl(path: Path) -> list[Any]:
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise DataError(f"{path}: line {n}: not valid JSON ({err})") from None
    return rows


def gsm8k_record(row: Any) -> dict[str, str]:
    """An original GSM8K row as an LLM-Adapters math record ("\\nA: <steps> The answer is N.").

    Calculator annotations (``<<48/2=24>>``) are removed and the steps joined into one line,
    the style of LLM-Adapters' math_data.json outputs.
    """
    if not isinstance(row, dict) or not isinstance(row.get("question"), str) or not isinstance(row.get("answer"), str):
        raise ValueError("expected an object with text fields 'question' and 'answer'")
    steps, sep, final = row["answer"].rpartition("####")
    final = final.strip().replace(",", "")
    if not sep or parse_number(final) is None:
        raise ValueError("answer does not end in '#### <number>'")
    text = " ".join(s.strip() for s in re.sub(r"<<[^>]*>>", "", steps).splitlines() if s.strip())
    return {"instruction": row["question"], "input": "", "output": f"\nA: {text} The answer is {final}.",
            "answer": final}


def parse_record(rec: Any, ex_id: str, need_number: bool) -> Example:
    """One LLM-Adapters math record -> Example; ValueError says what is wrong with it."""
    llm_adapters.check_record(rec)
    if not rec["instruction"].strip():
        raise ValueError("empty instruction")
    answer = rec["answer"].strip()
    if need_number and parse_number(answer.replace(",", "")) is None:
        raise ValueError(f"answer {rec['answer']!r} is not a number")
    return Example(ex_id, rec["instruction"], (), answer.replace(",", ""), rec["instruction"], rec["output"],
                   rec["answer"], rec.get("input") or "")


def parse_records(records: Any, where: str, split: str, need_number: bool) -> list[Example]:
    if not isinstance(records, list):
        raise DataError(f"{where}: expected a JSON list of records, found {type(records).__name__}")
    out = []
    for i, rec in enumerate(records):
        try:
            out.append(parse_record(rec, f"{split}-{i}", need_number))
        except ValueError as err:
            raise DataError(f"{where}: record {i}: {err}") from None
    return out


def _gsm8k_rows(source: DataSource, rel: str, split: str) -> tuple[list[Any], str, dict[str, str]]:
    """Original-format GSM8K rows: the local file, else (opted in) the hub's openai/gsm8k."""
    if not source.missing([rel]) or not source.hub:
        path, digest = source.checked(rel)
        return _read_jsonl(path), str(path), {rel: digest}
    rows, fingerprint = sources.hub_rows("openai/gsm8k", "main", split)
    return rows, f"hub openai/gsm8k {split}", {f"hub:openai/gsm8k:{split}": fingerprint}


@dataclass(frozen=True)
class Pool:
    train: list[Example]
    checksums: dict[str, str]
    note: str
    key: str


_pools: dict[tuple[str, bool], Pool] = {}


def training_pool(source: DataSource) -> Pool:
    """The shared math training set with every test question of the suite removed (cached)."""
    cache_key = (str(source.root), source.hub)
    if cache_key in _pools:
        return _pools[cache_key]
    checksums: dict[str, str] = {}
    held_out: set[str] = set()
    for rel in TEST_FILES.values():
        path, checksums[rel] = source.checked(rel)
        held_out |= {question_key(ex.question) for ex in parse_records(_read_json(path), str(path), "test", True)}
    test_rows, where, digests = _gsm8k_rows(source, GSM8K_TEST, "test")
    checksums.update(digests)
    for i, row in enumerate(test_rows):
        if not isinstance(row, dict) or not isinstance(row.get("question"), str):
            raise DataError(f"{where}: record {i}: expected an object with a text field 'question'")
        held_out.add(question_key(row["question"]))
    rows, where, digests = _gsm8k_rows(source, GSM8K_TRAIN, "train")
    checksums.update(digests)
    records = []
    for i, row in enumerate(rows):
        try:
            records.append(gsm8k_record(row))
        except ValueError as err:
            raise DataError(f"{where}: record {i}: {err}") from None
    candidates = parse_records(records, where, "gsm8k-train", True)
    path, checksums[MATH_DATA] = source.checked(MATH_DATA)
    # math_data.json also holds AQuA items (answers A-E): training text only, so no number needed
    candidates += parse_records(_read_json(path), str(path), "math_data", False)
    train, seen, dropped = [], set(held_out), 0
    for ex in candidates:
        key = question_key(ex.question)
        if key in seen:
            dropped += 1
            continue
        seen.add(key)
        train.append(ex)
    note = (f"train: {POOL_NOTE} ({len(train)} items; {dropped} dropped as test questions of "
            f"{', '.join(TEST_FILES)} or repeats), shared by the math tasks")
    digest = hashlib.sha256(json.dumps(checksums, sort_keys=True).encode()).hexdigest()[:16]
    _pools[cache_key] = pool = Pool(train, checksums, note, f"math-pool:{digest}")
    return pool


def load(name: str, source: DataSource) -> TaskData:
    rel = TEST_FILES[name]
    pool = training_pool(source)
    path, _ = source.checked(rel)
    test = parse_records(_read_json(path), str(path), "test", True)
    note = f"{pool.note}; test: {rel} ({len(test)} items)"
    return TaskData(pool.train, test, str(path.parent), dict(pool.checksums), note, shared_train=pool.key)


def make_task(name: str) -> Task:
    return Task(
        name=name,
        family="math",
        description=DESCRIPTIONS[name],
        load=lambda: load(name, sources.current()),
        answer_type="number",
        protocols=("generate",),
        max_new_tokens=MAX_NEW_TOKENS,
        extra={"train_source": "gsm8k+math_data"},
    )


TASKS = [make_task(name) for name in TEST_FILES]
