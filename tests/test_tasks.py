"""Task data: parsing of every format, checksums, clear errors, splits, registry."""
from __future__ import annotations

import bz2
import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pytest

from tasks import configured, registry, sources, synthetic, taskfile
from tasks.sources import DataError, DataSource
from tasks.splits import carve
from tasks.taskfile import FileRef

SHARED = sources.resolve_data_dir()[0]  # the configured folder (tests/conftest.py)
needs_shared = pytest.mark.needs_data
SPECS = registry.suites()["commonsense"]


def spec(name: str) -> taskfile.TaskSpec:
    return taskfile.builtin()[0][name]


def load(name: str, source: DataSource):
    return configured.load(spec(name), source)


@pytest.fixture(scope="module")
def shared() -> dict[str, object]:
    if not SHARED.is_dir():
        pytest.skip(f"offline benchmark data not at {SHARED}")
    src = DataSource(SHARED, "test")
    return {name: load(name, src) for name in SPECS}


def by_id(data, ex_id: str):
    return next(ex for ex in data.train + data.test if ex.id == ex_id)


# --- parsing real records -------------------------------------------------------------------

# task -> (id, question starts with, n choices, gold, first choice)
FIRST_RECORDS = {
    "boolq": ("test-0", "does ethanol take more energy make that produces", 2, 0, "no"),
    "piqa": ("test-1", "dresser", 2, 1, "replace drawer with bobby pin "),  # the trailing space is PIQA's
    "siqa": ("test-0", "Tracy didn't go home that evening and resisted Riley's attacks. What", 3, 2, "make a new plan"),
    "hellaswag": ("test-0", "Roof shingle removal: A man is sitting on a roof. He", 4, 3, "is using wrap to wrap a pair of skis."),
    "winogrande": ("test-0", "Sarah was a much better surgeon than Maria so _ always", 2, 1, "Sarah"),
    "arc_e": ("test-0", "Which statement best explains why photosynthesis", 4, 0, "Sunlight is the source of energy for nearly all ecosystems."),
    "arc_c": ("test-0", "An astronomer observes that a planet rotates faster", 4, 2, "Planetary density will decrease."),
    "obqa": ("test-0", "A person wants to start saving money", 4, 1, "make more phone calls"),
}
SIZES = {  # task -> (train, test) after splitting
    "boolq": (9427, 3270), "piqa": (551, 1287), "siqa": (586, 1368), "hellaswag": (1000, 9042),
    "winogrande": (380, 887), "arc_e": (2249, 2376), "arc_c": (1119, 1172), "obqa": (4957, 500),
}


@needs_shared
@pytest.mark.parametrize("name", list(SPECS))
def test_first_record_parses(shared, name):
    ex_id, question, n, gold, first = FIRST_RECORDS[name]
    ex = by_id(shared[name], ex_id)
    assert ex.question.startswith(question)
    assert len(ex.choices) == n and ex.gold == gold and ex.choices[0] == first
    assert ex.answer == registry.get(name).vocabulary[gold] or name == "boolq"
    assert ex.output == f"the correct answer is {ex.answer}"


@needs_shared
@pytest.mark.parametrize("name", list(SPECS))
def test_sizes_and_checksums(shared, name):
    data = shared[name]
    assert (len(data.train), len(data.test)) == SIZES[name]
    refs = [spec(name).test] + ([spec(name).train] if isinstance(spec(name).train, FileRef) else [])
    assert data.checksums == {ref.path: ref.sha256 for ref in refs} and all(ref.sha256 for ref in refs)


@needs_shared
def test_boolq_requests_are_lm_evals_without_a_passage(shared):
    ex = by_id(shared["boolq"], "test-1")
    assert ex.answer == "true" and ex.gold == 1
    assert registry.get("boolq").requests(ex) == [
        ("\nQuestion: is house tax and property tax are same?\nAnswer:", " no"),
        ("\nQuestion: is house tax and property tax are same?\nAnswer:", " yes"),
    ]


@needs_shared
def test_lm_eval_request_templates(shared):
    obqa = registry.get("obqa").requests(by_id(shared["obqa"], "test-1"))
    assert obqa[0] == ("There is most likely going to be fog around:", " a marsh")  # lm-eval: the bare stem
    arc = registry.get("arc_e").requests(by_id(shared["arc_e"], "test-0"))
    assert arc[0][0].startswith("Question: Which statement") and arc[0][0].endswith("\nAnswer:")
    siqa = registry.get("siqa").requests(by_id(shared["siqa"], "test-0"))
    assert siqa[0] == ("Q: Tracy didn't go home that evening and resisted Riley's attacks. What does Tracy need to do "
                       "before this?\nA:", " make a new plan")


@needs_shared
def test_hellaswag_gets_lm_evals_preprocessing_offline(shared):
    ex = by_id(shared["hellaswag"], "test-0")
    assert ex.instruction == (
        "Please choose the correct ending to complete the given sentence: Roof shingle removal: A man is sitting on a "
        "roof. He\n\nEnding1: is using wrap to wrap a pair of skis. Ending2: is ripping level tiles off. Ending3: is "
        "holding a rubik's cube. Ending4: starts pulling up roofing on a roof.\n\nAnswer format: "
        "ending1/ending2/ending3/ending4"
    )
    assert ex.answer == "ending4" and ex.output == "the correct answer is ending4"
    assert registry.get("hellaswag").requests(ex)[3] == (ex.question, " starts pulling up roofing on a roof.")


@needs_shared
def test_winogrande_partial_contexts(shared):
    ex = by_id(shared["winogrande"], "test-0")
    assert registry.get("winogrande").requests(ex) == [
        ("Sarah was a much better surgeon than Maria so Sarah", " always got the easier cases."),
        ("Sarah was a much better surgeon than Maria so Maria", " always got the easier cases."),
    ]


@needs_shared
def test_arc_variable_choice_counts(shared):
    counts = {len(ex.choices) for ex in shared["arc_e"].test}
    assert counts == {3, 4, 5}


# --- data dir, checksums, errors --------------------------------------------------------------

def test_data_dir_resolution_order(monkeypatch, tmp_path):
    monkeypatch.undo()  # the real default, not the empty folder tests/conftest.py hides data behind (nothing is read)
    monkeypatch.delenv(sources.DATA_ENV, raising=False)
    assert sources.resolve_data_dir()[0] == sources.PROJECT_ROOT.parent / "shared" / "data"
    monkeypatch.setenv(sources.DATA_ENV, str(tmp_path / "env"))
    assert sources.resolve_data_dir()[0] == tmp_path / "env"
    assert sources.resolve_data_dir(tmp_path / "cli")[0] == tmp_path / "cli"


PIQA_REL = "llm-adapters/dataset/piqa/test.json"


def piqa_record(goal: str, s1: str, s2: str, answer: str) -> dict[str, str]:
    text = f"Please choose the correct solution to the question: {goal}\n\nSolution1: {s1}\n\nSolution2: {s2}\n\nAnswer format: solution1/solution2"
    return {"instruction": text, "input": "", "output": f"the correct answer is {answer}", "answer": answer}


def write(root: Path, rel: str, content: str | bytes) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def test_checksum_mismatch_names_path_and_remedy(tmp_path):
    path = write(tmp_path, PIQA_REL, json.dumps([piqa_record("g", "a", "b", "solution1")]))
    with pytest.raises(DataError) as err:
        load("piqa", DataSource(tmp_path, "test"))
    msg = str(err.value)
    assert str(path) in msg and "checksum mismatch" in msg
    assert "--data-dir" in msg and sources.DATA_ENV in msg


def test_custom_pins_accept_fixture(tmp_path):
    raw = json.dumps([piqa_record(f"goal {i}", "a", "b", "solution2") for i in range(10)])
    write(tmp_path, PIQA_REL, raw)
    pins = {PIQA_REL: hashlib.sha256(raw.encode()).hexdigest()}
    data = configured.load(replace(spec("piqa"), test=FileRef(PIQA_REL, pins[PIQA_REL])), DataSource(tmp_path, "test"))
    assert len(data.train) == 3 and len(data.test) == 7 and data.checksums == pins


def test_missing_files_listed_with_hub_hint(tmp_path):
    with pytest.raises(DataError) as err:
        load("arc_e", DataSource(tmp_path, "test"))
    msg = str(err.value)
    assert str(tmp_path / "llm-adapters/dataset/ARC-Easy/test.json") in msg
    assert str(tmp_path / "llm-adapters/dataset/ARC-Easy/train.json") in msg
    assert sources.HUB_ENV in msg and "allenai/ai2_arc" in msg and "--data-dir" in msg


def test_hub_failure_is_a_data_error(tmp_path, monkeypatch):
    import datasets

    def offline(*_, **__):
        raise ConnectionError("Couldn't reach 'allenai/ai2_arc' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError) as err:
        load("arc_e", DataSource(tmp_path, "test", hub=True))
    msg = str(err.value)
    assert "hub fallback failed" in msg and "unreachable" in msg and str(tmp_path) in msg


def test_hub_rows_become_parseable_records(tmp_path, monkeypatch):
    import datasets

    rows = {
        "train": [{"question": "Q1?", "choices": {"text": ["x", "y", "z"], "label": ["A", "B", "C"]}, "answerKey": "C"}],
        "test": [{"question": "Q2?", "choices": {"text": ["p", "q"], "label": ["1", "2"]}, "answerKey": "1"}],
    }
    monkeypatch.setattr(datasets, "load_dataset", lambda path, name, split: rows[split])
    data = load("arc_e", DataSource(tmp_path, "test", hub=True))
    assert data.train[0].choices == ("x", "y", "z") and data.train[0].gold == 2
    assert data.test[0].question == "Q2?" and data.test[0].gold == 0
    assert data.source.startswith("hub:") and "hub" in data.split_note


def test_hub_rows_of_every_task_give_the_offline_text(tmp_path, monkeypatch):
    """Hub rows go through the same field mapping and preprocessing as the offline files."""
    import datasets

    rows = {
        "hellaswag": {"activity_label": "Cooking", "ctx_a": "A man cuts.", "ctx_b": "he", "label": "1",
                      "endings": ["e1 [title] x", "e2", "e3", "e4"]},
        "winogrande": {"sentence": "A _ b.", "option1": "x", "option2": "y", "answer": "2"},
        "siqa": {"context": "Kai ran.", "question": "Why?", "answerA": "a", "answerB": "b", "answerC": "c", "label": "3"},
        "boolq": {"question": "is it", "answer": True, "passage": "p"},
    }
    monkeypatch.setattr(datasets, "load_dataset", lambda path, name, split: [rows[task]])
    for task, (question, first, gold) in {"hellaswag": ("Cooking: A man cuts. He", "e1. x", 1),
                                          "winogrande": ("A _ b.", "x", 1), "siqa": ("Kai ran. Why?", "a", 2),
                                          "boolq": ("is it?", "no", 1)}.items():
        ex = load(task, DataSource(tmp_path, "test", hub=True)).test[0]
        assert (ex.question, ex.choices[0], ex.gold) == (question, first, gold), task
    assert ex.instruction == ("Please answer the following question with true or false, question: is it?\n\n"
                              "Answer format: true/false") and ex.answer == "true"


def test_hellaswag_text_recovers_ctx_b_for_lm_evals_capitalisation(tmp_path):
    text = "Roofing: A man sits. the man\n0\na\nb\nc\nd\nHow to cook: Boil water.\n1\na\nb\nc\nd\n"
    rows = configured.read_hellaswag_text(write(tmp_path, "h.txt", text))
    assert (rows[0]["activity_label"], rows[0]["ctx_a"], rows[0]["ctx_b"]) == ("Roofing", "A man sits.", "the man")
    assert rows[1]["ctx_b"] == "" and configured.hellaswag(rows[0])["query"] == "Roofing: A man sits. The man"


@pytest.mark.parametrize("content, where", [
    ("[{", "not valid JSON"),
    (json.dumps([piqa_record("g", "a", "b", "solution1"), {"instruction": "x", "output": "y"}]), "record 1: missing or non-text field 'answer'"),
    (json.dumps([piqa_record("g", "a", "b", "solution1")] * 2 + [piqa_record("g", "a", "b", "solution3")]), "record 2: answer 'solution3' is not among"),
    (json.dumps([{"instruction": "Please choose the correct solution to the question: g\n\nSolution1: a\n\nAnswer format: solution1/solution2",
                  "input": "", "output": "", "answer": "solution1"}]), "record 0: no 'Solution2:' option"),
    (json.dumps({"not": "a list"}), "expected a non-empty JSON list"),
    (json.dumps({"goal": "g", "sol1": "a", "sol2": "b"}) + "\n" + json.dumps({"goal": "h", "sol1": "a", "sol2": "b"}),
     "it looks like JSON lines"),
])
def test_malformed_records_name_file_and_index(tmp_path, content, where):
    path = write(tmp_path, PIQA_REL, content)
    with pytest.raises(DataError) as err:
        load("piqa", DataSource(tmp_path, "test", verify=False))
    assert str(path) in str(err.value) and where in str(err.value)


def test_malformed_hellaswag_names_record(tmp_path):
    good = "ctx\n0\na\nb\nc\nd\n"
    path = write(tmp_path, spec("hellaswag").test.path, bz2.compress((good + "ctx2\n7\na\nb\nc\nd\n").encode()))
    with pytest.raises(DataError, match="record 1") as err:
        load("hellaswag", DataSource(tmp_path, "test", verify=False))
    assert str(path) in str(err.value)


# --- splits ---------------------------------------------------------------------------------

def test_carve_deterministic_disjoint_and_avoids_duplicates():
    keys = [f"item {i}" for i in range(200)] + ["dup", "dup"]
    train, test, note = carve(keys)
    assert (train, test) == carve(keys)[:2]
    assert not set(train) & set(test) and sorted(train + test) == list(range(len(keys)))
    assert len(train) == 60 and {200, 201} <= set(test)
    assert "seed" in note and "60 of 202" in note


def test_carve_caps_at_1000():
    train, test, _ = carve(list(range(10_000)))
    assert len(train) == 1000 and len(test) == 9000 and test == sorted(test)


@needs_shared
def test_carved_task_never_trains_on_test_text(shared):
    data = shared["siqa"]
    assert not {ex.instruction for ex in data.train} & {ex.instruction for ex in data.test}
    assert not {ex.id for ex in data.train} & {ex.id for ex in data.test}
    assert "carved" in data.split_note and data.test == sorted(data.test, key=lambda e: int(e.id.split("-")[1]))


@needs_shared
def test_official_train_overlap_dropped(shared):
    note = shared["arc_e"].split_note
    assert "2 train items identical to test items dropped" in note


# --- synthetic --------------------------------------------------------------------------------

def test_synthetic_deterministic_and_disjoint():
    a, b = synthetic.load(), synthetic.load()
    assert a == b and a.checksums["generated"]
    assert (len(a.train), len(a.test)) == (synthetic.N_TRAIN, synthetic.N_TEST)
    assert not {ex.question for ex in a.train} & {ex.question for ex in a.test}
    assert {ex.gold for ex in a.test} == {0, 1}
    ex = a.test[0]
    assert registry.get("synthetic").requests(ex)[0] == (f"Review: {ex.question}\nSentiment:", " positive")


# --- registry ---------------------------------------------------------------------------------

def test_registry_names_suites_and_errors():
    assert registry.expand("commonsense") == SPECS == ["boolq", "piqa", "siqa", "hellaswag", "winogrande", "arc_e",
                                                       "arc_c", "obqa"]
    assert registry.expand("boolq, arc_e,boolq") == ["boolq", "arc_e"]
    assert registry.expand("synthetic commonsense")[:2] == ["synthetic", "boolq"]
    with pytest.raises(registry.UnknownTask) as err:
        registry.expand("boolq,nope")
    assert "nope" in str(err.value) and "arc_c" in str(err.value) and "commonsense" in str(err.value)
    lines = registry.describe()
    assert [line.split()[0] for line in lines[:-2]] == registry.names() and lines[-2].startswith("suites:")
    assert registry.names()[:8] == SPECS and "gsm8k" in registry.names()
    assert "file:PATH" in lines[-1] and "lm-eval:NAME" in lines[-1] and "task.yaml" in lines[-1]
    assert "train: carved from test" in next(line for line in lines if line.startswith("piqa "))


def test_load_is_cached_and_sets_chance():
    task = registry.get("synthetic")
    assert registry.load("synthetic") is registry.load(task)
    assert task.chance == 0.5


@needs_shared
def test_chance_for_variable_choices(monkeypatch):
    monkeypatch.delenv(sources.DATA_ENV, raising=False)
    data = registry.load("arc_c")
    chance = registry.get("arc_c").chance
    assert chance == pytest.approx(sum(1 / len(ex.choices) for ex in data.test) / len(data.test))
    assert 0.24 < chance < 0.26


def test_malformed_commonsense_file_through_the_cli_is_one_line(tmp_path, capsys, monkeypatch):
    from harness import cli

    path = write(tmp_path, PIQA_REL, json.dumps([piqa_record("g", "a", "b", "solution1"), {"instruction": "x"}]))
    monkeypatch.setattr(sources, "current", lambda: DataSource(tmp_path, "test", verify=False))
    monkeypatch.setenv(sources.DATA_ENV, str(tmp_path))
    for command in (["eval"], ["run", "--methods", "lora", "--executor", "inline"]):
        assert cli.main([*command, "--model", "tiny-llama", "--tasks", "piqa", "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and f"{path}: record 1: missing or non-text field" in err


@needs_shared
def test_tiny_model_context_fits_every_commonsense_request():
    """tiny-llama scores with byte tokens: its context must hold the longest request of any task."""
    from harness.models import TINY_LLAMA_CONFIG, ByteTokenizer

    tok = ByteTokenizer(TINY_LLAMA_CONFIG["vocab_size"], TINY_LLAMA_CONFIG["max_position_embeddings"])
    for name in registry.expand("commonsense"):
        task, data = registry.get(name), registry.load(name)
        longest = max(len(tok(p + c)["input_ids"]) for ex in data.test for p, c in task.requests(ex))
        assert longest <= tok.model_max_length, (name, longest)


def test_a_test_without_the_needs_data_mark_sees_no_benchmark_data():
    """The enforcement (tests/conftest.py): unmarked, a read of benchmark data fails loudly, so a
    data-reading test cannot pass here and fail only on a clone without ../shared/data."""
    from tasks.sources import DataError

    with pytest.raises(DataError, match="data not found"):
        registry.load("arc_e")
