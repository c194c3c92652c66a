"""The one configurable task: a task file (``tasks.taskfile``) in, ``Task`` and its items out.

Records are read in one of three formats (LLM-Adapters json, json lines with an optional
separate labels file, HellaSwag's six-line text), optionally transformed by a named
preprocessing, then mapped to ``Example``: LLM-Adapters records carry their options inside the
instruction, so question, options and answer labels are parsed back out of it; any other record
goes through the file's field mapping (``question``, ``choices``, ``gold``) and gets an
LLM-Adapters-style instruction from the file's template, so both protocols treat every source
alike. Hub rows (opt-in, when files are missing) take the same path with the hub's own field
names, so a task gives the same text from either source.
"""
from __future__ import annotations

import bz2
import hashlib
import json
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from tasks import llm_adapters, sources
from tasks.base import Example, Task, TaskData
from tasks.llm_adapters import parse_number
from tasks.sources import DataError, DataSource
from tasks.splits import carve
from tasks.taskfile import FileRef, SuiteSpec, TaskSpec

Doc = dict[str, Any]


# -- reading records -------------------------------------------------------------------------

def _text(path: Path) -> str:
    try:
        raw = path.read_bytes()
        return (bz2.decompress(raw) if path.suffix == ".bz2" else raw).decode("utf-8")
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: cannot read/decompress/decode it ({err})") from None


def read_llm_adapters(path: Path) -> list[Doc]:
    """A JSON list of ``{instruction, input, output, answer}`` records."""
    text = _text(path)
    try:
        records = json.loads(text)
    except json.JSONDecodeError as err:
        hint = ""
        if err.msg == "Extra data" and text.lstrip().startswith("{"):
            hint = ("; it looks like JSON lines (one record per line): describe it in a task file with "
                    "data.format: jsonl and a field mapping (and data.test.labels for a separate labels file, "
                    "as PIQA's valid.jsonl + valid-labels.lst); see the README, 'Your own benchmark'")
        raise DataError(f"{path}: not valid JSON, as an LLM-Adapters list of records needs ({err}){hint}") from None
    if not isinstance(records, list) or not records:
        raise DataError(f"{path}: expected a non-empty JSON list of LLM-Adapters records "
                        f"{{instruction, input, output, answer}}")
    for i, rec in enumerate(records):
        try:
            llm_adapters.check_record(rec)
        except ValueError as err:
            raise DataError(f"{path}: record {i}: {err}") from None
    return records


def read_jsonl(path: Path, labels: Path | None = None, label_field: str = "label") -> list[Doc]:
    """JSON objects one per line; a labels file adds its line k as field ``label`` of record k."""
    docs = []
    for n, line in enumerate(_text(path).splitlines(), 1):
        if line.strip():
            try:
                doc = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}: line {n}: not a JSON record ({err}); data.format jsonl wants one JSON "
                                f"object per line") from None
            if not isinstance(doc, dict):
                raise DataError(f"{path}: line {n}: expected a JSON object, found {type(doc).__name__}")
            docs.append(doc)
    if labels is not None:
        values = [v.strip() for v in _text(labels).splitlines() if v.strip()]
        if len(values) != len(docs):
            raise DataError(f"{labels}: {len(values)} labels for {len(docs)} records of {path}; the labels file "
                            f"needs one line per record, in order")
        for doc, value in zip(docs, values):
            doc[label_field] = value
    return docs


def read_hellaswag_text(path: Path) -> list[Doc]:
    """The six-lines-per-item text (``label: context``, gold 0-3, four endings) as hub-style rows.

    The file joins HellaSwag's ``ctx_a`` and ``ctx_b``; lm-eval capitalises ``ctx_b``, so it is
    recovered as the lower-case fragment after the context's last sentence (ActivityNet items
    end in one, e.g. "... on a roof. he"); items without one have an empty ``ctx_b``.
    """
    lines = _text(path).split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) % 6:
        raise DataError(f"{path}: {len(lines)} lines, not a multiple of 6 (context, label, 4 endings): not "
                        f"HellaSwag's text format")
    docs = []
    for i in range(len(lines) // 6):
        ctx, label, *endings = lines[6 * i: 6 * i + 6]
        if label not in {"0", "1", "2", "3"} or not ctx.strip() or not all(e.strip() for e in endings):
            raise DataError(f"{path}: record {i} (line {6 * i + 1}): expected context, label 0-3, 4 non-empty endings")
        activity, _, ctx = ctx.partition(": ") if ": " in ctx else ("", "", ctx)
        tail = re.search(r"(?<=[.!?] )[a-z][^.!?]*$", ctx)
        ctx_a, ctx_b = (ctx[:tail.start() - 1], tail.group(0)) if tail else (ctx, "")
        docs.append({"activity_label": activity, "ctx_a": ctx_a, "ctx_b": ctx_b, "endings": endings, "label": label})
    return docs


# -- named preprocessing (lm-eval's process_docs, GSM8K's original format) -------------------

def _hellaswag_clean(text: str) -> str:
    """lm-eval's HellaSwag ``preprocess``: WikiHow markup out, spacing fixed."""
    text = text.strip().replace(" [title]", ". ")
    return re.sub("\\[.*?\\]", "", text).replace("  ", " ")


def hellaswag(doc: Doc) -> Doc:
    """lm-eval's HellaSwag ``process_docs``: the query and endings exactly as it scores them."""
    ctx = doc["ctx_a"] + " " + doc["ctx_b"].capitalize()
    return {"query": _hellaswag_clean(doc["activity_label"] + ": " + ctx),
            "choices": [_hellaswag_clean(e) for e in doc["endings"]], "gold": int(doc["label"])}


def gsm8k(doc: Doc) -> Doc:
    """An original GSM8K row as an LLM-Adapters math record ("\\nA: <steps> The answer is N.").

    Calculator annotations (``<<48/2=24>>``) are removed and the steps joined into one line,
    the style of LLM-Adapters' math_data.json outputs.
    """
    if not isinstance(doc.get("question"), str) or not isinstance(doc.get("answer"), str):
        raise ValueError("expected text fields 'question' and 'answer'")
    steps, sep, final = doc["answer"].rpartition("####")
    final = final.strip().replace(",", "")
    if not sep or parse_number(final) is None:
        raise ValueError("answer does not end in '#### <number>'")
    text = " ".join(s.strip() for s in re.sub(r"<<[^>]*>>", "", steps).splitlines() if s.strip())
    return {"instruction": doc["question"], "input": "", "output": f"\nA: {text} The answer is {final}.",
            "answer": final}


PREPROCESS: dict[str, Callable[[Doc], Doc]] = {"hellaswag": hellaswag, "gsm8k": gsm8k}
READERS = {"llm-adapters": read_llm_adapters, "hellaswag-text": read_hellaswag_text}


# -- records -> examples -----------------------------------------------------------------------

def _field(doc: Doc, spec: str) -> Any:
    """A dotted path into the record ("choices.text"), or a template over its fields ("{context} {question}")."""
    if "{" in spec:
        return spec.format_map(doc)
    value: Any = doc
    for part in spec.split("."):
        if not isinstance(value, dict) or part not in value:
            raise ValueError(f"no field {spec!r} (fields: {', '.join(map(str, doc))})")
        value = value[part]
    return value


def _gold(doc: Doc, spec: str | dict[str, str]) -> int:
    """The gold index: a field holding it, or ``{key: answerKey, in: choices.label}`` (a position)."""
    if isinstance(spec, dict):
        key, among = str(_field(doc, spec["key"])).strip(), [str(v).strip() for v in _field(doc, spec["in"])]
        if key not in among:
            raise ValueError(f"gold {key!r} is not among {among}")
        return among.index(key)
    value = _field(doc, spec)
    return int(value.strip() if isinstance(value, str) else value)


def choice_labels(spec: TaskSpec, n: int) -> tuple[str, ...]:
    """Answer labels of an item with ``n`` options: one per choice, or "<prefix>1".."<prefix>n"."""
    if isinstance(spec.labels, tuple):
        return spec.labels
    return tuple(f"{spec.labels}{k}" for k in range(1, n + 1))


def instruction(spec: TaskSpec, question: str, choices: list[str], labels: tuple[str, ...]) -> str:
    """An LLM-Adapters-style instruction for a record that has none (the generation protocol's)."""
    options = spec.option_sep.join(f"{lab[:1].upper() + lab[1:]}: {c}" for lab, c in zip(labels, choices))
    return spec.instruction.format(header=spec.data_header, question=question, options=options,
                                   formats="/".join(labels))


def mapped_example(spec: TaskSpec, doc: Doc, fields: dict[str, Any], ex_id: str) -> Example:
    """A record without an instruction: question, choices and gold through the field mapping."""
    question = str(_field(doc, fields.get("question", "question")))
    if "choice_texts" in fields:
        choices = [str(c) for c in fields["choice_texts"]]
    else:
        spec_choices = fields.get("choices", "choices")
        raw = [_field(doc, c) for c in spec_choices] if isinstance(spec_choices, list) else _field(doc, spec_choices)
        choices = [str(c) for c in raw]  # as the source has them: spaces are the choice's text
    gold = _gold(doc, fields.get("gold", "gold")) - int(fields.get("gold_base", 0))
    if not 0 <= gold < len(choices):
        raise ValueError(f"gold index {gold} is outside the {len(choices)} choices")
    labels = choice_labels(spec, len(choices))
    answer = labels[gold]
    return Example(ex_id, question, tuple(choices), gold, instruction(spec, question, choices, labels),
                   f"the correct answer is {answer}", answer, labels=labels)


def record_example(spec: TaskSpec, rec: Doc, ex_id: str, need_number: bool = True) -> Example:
    """An LLM-Adapters record: options and labels parsed back out of its instruction."""
    llm_adapters.check_record(rec)
    answer, common = rec["answer"].strip(), dict(instruction=rec["instruction"], output=rec["output"],
                                                 answer=rec["answer"], input=rec.get("input") or "")
    if spec.answer == "number":
        if not rec["instruction"].strip():
            raise ValueError("empty instruction")
        if need_number and parse_number(answer.replace(",", "")) is None:
            raise ValueError(f"answer {rec['answer']!r} is not a number")
        return Example(ex_id, rec["instruction"], (), answer.replace(",", ""), **common)
    question, options, listed = llm_adapters.parse_instruction(rec["instruction"], spec.data_header)
    if answer not in listed:
        raise ValueError(f"answer {answer!r} is not among the choices {listed}")
    if options:
        return Example(ex_id, question, options, listed.index(answer), labels=tuple(listed), **common)
    labels = choice_labels(spec, len(listed))  # true/false: the file gives the texts scored per label
    texts = spec.fields.get("choice_texts", labels)
    if answer not in labels or len(texts) != len(labels):
        raise ValueError(f"answer {answer!r}: no choice text for it (generate.labels {list(labels)})")
    return Example(ex_id, question, tuple(texts), labels.index(answer), labels=tuple(listed), **common)


def to_examples(spec: TaskSpec, docs: list[Doc], where: str, split: str, fields: dict[str, Any],
                need_number: bool = True) -> list[Example]:
    """Records -> examples; any record that does not fit is one DataError naming file and index."""
    out = []
    partial = (spec.likelihood or {}).get("form") == "partial"
    for i, doc in enumerate(docs):
        try:
            if spec.preprocess:
                doc = PREPROCESS[spec.preprocess](doc)
            ex = (record_example(spec, doc, f"{split}-{i}", need_number) if "instruction" in doc
                  else mapped_example(spec, doc, fields, f"{split}-{i}"))
            if partial and "_" not in ex.question:
                raise ValueError("no '_' blank in the sentence (likelihood form: partial)")
        except (ValueError, KeyError, TypeError, IndexError) as err:
            raise DataError(f"{where}: record {i}: {err}") from None
        out.append(ex)
    return out


# -- files, checksums, hub ----------------------------------------------------------------------

def data_path(base: Path, rel: str, source: DataSource | None = None, sha256: str = "") -> Path:
    """A file a task names: absolute, or relative to ``base`` (the data folder or the task file's).
    Relative to the data folder, it is looked for along ``source``'s chain of folders (and
    downloaded when pinned); where it is nowhere, the path it would have in ``base``."""
    if Path(rel).expanduser().is_absolute():
        return Path(rel).expanduser()
    if source is not None and base == source.root:
        return source.find(rel, sha256)[0] or base / rel
    return base / rel


def _checked(path: Path, pinned: str, source: DataSource) -> str:
    """SHA-256 of a data file, compared with its pin when the task file gives one."""
    digest = sources.sha256(path)
    if source.verify and pinned and digest != pinned:
        raise DataError(f"checksum mismatch for {path}: expected sha256 {pinned}, found {digest}. The file differs "
                        f"from the pinned release (edited, truncated or another version). {sources.how_to_supply()}")
    return digest


def read_ref(ref: FileRef, fmt: str, base: Path, source: DataSource) -> tuple[list[Doc], dict[str, str], str]:
    """(records, {file: sha256}, where) of one file (and its labels file)."""
    path = data_path(base, ref.path, source, ref.sha256)
    checksums = {ref.path: _checked(path, ref.sha256, source)}
    labels = None
    if ref.labels:
        labels = data_path(base, ref.labels, source, ref.labels_sha256)
        if not labels.is_file():
            raise DataError(f"labels file not found: {labels} (data.test.labels / data.train.labels)")
        checksums[ref.labels] = _checked(labels, ref.labels_sha256, source)
    docs = read_jsonl(path, labels) if fmt == "jsonl" else READERS[fmt](path)
    return docs, checksums, str(path)


def hub_docs(path: str, name: str | None, split: str) -> tuple[list[Doc], dict[str, str], str]:
    rows, fingerprint = sources.hub_rows(path, name, split)
    label = path + (f" ({name})" if name else "")
    return rows, {f"hub:{label}:{split}": fingerprint}, f"hub:{label} split {split!r}"


def _missing(refs: list[FileRef], base: Path, source: DataSource) -> list[tuple[str, str]]:
    """(path, pin) of every file of ``refs`` found nowhere."""
    files = [(r.path, r.sha256) for r in refs] + [(r.labels, r.labels_sha256) for r in refs if r.labels]
    return [(rel, sha) for rel, sha in files if not data_path(base, rel, source, sha).is_file()]


def _not_found(missing: list[tuple[str, str]], base: Path, source: DataSource, what: str, hint: str | None) -> DataError:
    """The error for missing files: every place tried for a data-folder file, else the path."""
    paths = ", ".join(str(data_path(base, rel)) for rel, _ in missing)
    tried = ""
    if base == source.root and not Path(missing[0][0]).expanduser().is_absolute():
        tried = "; tried " + "; ".join(source.find(*missing[0])[1])
    return DataError(f"{what}: data not found: {paths}{tried}. {sources.how_to_supply(hint)}")


# -- splits --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Pool:
    """A training set shared by a suite's tasks, with every member's test question removed."""

    train: list[Example]
    checksums: dict[str, str]
    note: str
    key: str


_pools: dict[tuple[str, str, bool], Pool] = {}


def question_key(text: str) -> str:
    """Identity of a question across files that space and punctuate it differently."""
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


def _source_examples(spec: TaskSpec, ref: FileRef, source: DataSource, split: str, need_number: bool
                     ) -> tuple[list[Example], dict[str, str], str]:
    """Examples of one suite source: the local file, else (opted in) its hub split."""
    base = source.root
    pre = replace(spec, preprocess=ref.preprocess)
    missing = _missing([ref], base, source)
    if missing and source.hub and ref.hub:
        docs, sums, where = hub_docs(ref.hub["path"], ref.hub.get("name"), ref.hub["split"])
    else:
        if missing:
            raise _not_found(missing, base, source, spec.name, ref.hub.get("path"))
        docs, sums, where = read_ref(ref, ref.format, base, source)
    return to_examples(pre, docs, where, split, {}, need_number), sums, where


def suite_pool(suite: SuiteSpec, members: list[TaskSpec], source: DataSource) -> Pool:
    """The suite's shared training set, built once per process and data source."""
    cache_key = (suite.name, str(source.root), source.hub)
    if cache_key in _pools:
        return _pools[cache_key]
    checksums: dict[str, str] = {}
    held: set[str] = set()
    for member in members:
        data = load_test(member, source)
        held |= {question_key(ex.question) for ex in data[0]}
        checksums.update(data[1])
    for ref in suite.held_out:
        examples, sums, _ = _source_examples(members[0], ref, source, "test", True)
        held |= {question_key(ex.question) for ex in examples}
        checksums.update(sums)
    candidates = []
    for ref in suite.train:
        # training text only: an item need not have a numeric answer (math_data.json holds AQuA)
        examples, sums, _ = _source_examples(members[0], ref, source, Path(ref.path).name.split(".")[0], False)
        candidates += examples
        checksums.update(sums)
    train, seen, dropped = [], set(held), 0
    for ex in candidates:
        key = question_key(ex.question)
        if key in seen:
            dropped += 1
            continue
        seen.add(key)
        train.append(ex)
    files = " + ".join(Path(r.path).name for r in suite.train)
    note = (f"train: {files} ({len(train)} items; {dropped} dropped as test questions of "
            f"{', '.join(suite.tasks)} or repeats), shared by the {suite.name} tasks")
    digest = hashlib.sha256(json.dumps(checksums, sort_keys=True).encode()).hexdigest()[:16]
    _pools[cache_key] = pool = Pool(train, checksums, note, f"{suite.name}-pool:{digest}")
    return pool


def load_test(spec: TaskSpec, source: DataSource) -> tuple[list[Example], dict[str, str], str, str]:
    """(test examples, checksums, where, note) from the files when every file the task reads is
    there, else (opted in) the hub for all of them: one task, one source."""
    base = spec.base_dir(source.root)
    missing = _missing([spec.test] + ([spec.train] if isinstance(spec.train, FileRef) else []), base, source)
    if not missing:
        docs, sums, where = read_ref(spec.test, spec.format, base, source)
        return to_examples(spec, docs, where, "test", spec.fields), sums, where, f"test: {spec.test.path}"
    hint = spec.hub.label() if spec.hub else None
    paths = ", ".join(str(data_path(base, rel)) for rel, _ in missing)
    if spec.root != "data_dir":
        raise DataError(f"{spec.name}: data not found: {paths} (paths in {spec.file} are relative to its folder; "
                        f"give absolute paths, or data.root: data_dir for paths inside the data folder)")
    if not (source.hub and spec.hub):
        raise _not_found(missing, base, source, spec.name, hint)
    try:
        docs, sums, where = hub_docs(spec.hub.path, spec.hub.name, spec.hub.test_split)
    except DataError as err:
        raise DataError(f"{spec.name}: data not found: {paths}, and the hub fallback failed: {err}") from None
    return to_examples(spec, docs, where, "test", spec.hub.fields or spec.fields), sums, where, f"hub: {hint}"


def load(spec: TaskSpec, source: DataSource, suite: tuple[SuiteSpec, list[TaskSpec]] | None = None) -> TaskData:
    """The task's splits. Train items repeating a test item are dropped, and tasks without a train
    split get a seed-independent carve (or none), so nothing evaluated is trained on."""
    test, checksums, where, origin = load_test(spec, source)
    from_hub = origin.startswith("hub")
    shared = ""
    if spec.train is None:
        train, note = [], f"{origin} ({len(test)} items); no train split, so evaluation only"
    elif spec.train == "carve":
        train_idx, test_idx, carve_note = carve([ex.instruction for ex in test])
        if from_hub:
            docs, sums, hwhere = hub_docs(spec.hub.path, spec.hub.name, spec.hub.train_split)
            train, checksums = to_examples(spec, docs, hwhere, "train", spec.hub.fields or spec.fields), {**checksums, **sums}
            note = f"{origin}, train split {spec.hub.train_split!r} ({len(train)} items), test split ({len(test)} items)"
        else:
            train, test = [test[i] for i in train_idx], [test[i] for i in test_idx]
            note = f"{carve_note} (no offline train split; source {spec.test.path}; ids are test-file indices)"
    elif isinstance(spec.train, str):  # suite:NAME
        pool = suite_pool(suite[0], suite[1], source)
        train, shared, checksums = pool.train, pool.key, {**pool.checksums, **checksums}
        note = f"{pool.note}; test: {spec.test.path} ({len(test)} items)"
    else:
        if from_hub:
            docs, sums, twhere = hub_docs(spec.hub.path, spec.hub.name, spec.hub.train_split)
            train_all = to_examples(spec, docs, twhere, "train", spec.hub.fields or spec.fields)
        else:
            docs, sums, twhere = read_ref(spec.train, spec.format, spec.base_dir(source.root), source)
            train_all = to_examples(spec, docs, twhere, "train", spec.fields)
        checksums = {**checksums, **sums}
        seen = {ex.instruction for ex in test}
        train = [ex for ex in train_all if ex.instruction not in seen]
        dropped = len(train_all) - len(train)
        note = (f"train: {spec.train.path if not from_hub else twhere} ({len(train)} items" + (f"; {dropped} train items identical to test items dropped"
                if dropped else "") + f"); {origin} ({len(test)} items)")
    return TaskData(train, test, where, checksums, note, shared_train=shared)


# -- the task -------------------------------------------------------------------------------------

def requests(spec: TaskSpec) -> Callable[[Example], list[tuple[str, str]]]:
    """The likelihood protocol's (context, continuation) per choice, as lm-eval builds them."""
    form = spec.likelihood or {}
    if form.get("form") == "partial":
        def partial(ex: Example) -> list[tuple[str, str]]:
            """lm-eval's WinoGrande: the choice fills the blank in the context; the rest is scored."""
            i = ex.question.index("_")
            rest = " " + ex.question[i + 1:].strip()
            return [(ex.question[:i] + c, rest) for c in ex.choices]
        return partial
    context, continuation = form.get("context", ""), form.get("continuation", "")

    def per_choice(ex: Example) -> list[tuple[str, str]]:
        ctx = context.format(question=ex.question)
        return [(ctx, continuation.format(choice=c)) for c in ex.choices]
    return per_choice


def make_task(spec: TaskSpec, name: str, load_fn: Callable[[], TaskData]) -> Task:
    """The ``Task`` a task file describes, under ``name``; ``load_fn`` reads its data (the registry caches it)."""
    protocols = (("likelihood",) if spec.likelihood else ()) + ("generate",)
    train = ("none" if spec.train is None else "carved from test" if spec.train == "carve"
             else spec.train if isinstance(spec.train, str) else Path(spec.train.path).name)
    return Task(
        name=name, family=spec.family, description=spec.description, load=load_fn,
        vocabulary=spec.vocabulary, answer_type=spec.answer,  # type: ignore[arg-type]
        format_requests=requests(spec) if spec.likelihood else None, protocols=protocols,
        max_new_tokens=spec.max_new_tokens, metrics=spec.likelihood["metrics"] if spec.likelihood else ("acc",),
        text_id=spec.preprocess, extra={"train_source": train, "file": str(spec.file)})
