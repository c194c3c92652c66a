"""The math suite: record conversion, the shared training pool never holding a test question,
clear errors on malformed files, and the real files' sizes and checksums."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness import cli
from tasks import configured, registry, sources, taskfile
from tasks.configured import question_key
from tasks.sources import DataError, DataSource

SHARED = sources.resolve_data_dir()[0]  # the configured folder (tests/conftest.py)
needs_shared = pytest.mark.needs_data
SUITE = taskfile.builtin()[1]["math"]
TEST_FILES = {name: taskfile.builtin()[0][name].test.path for name in SUITE.tasks}
GSM8K_TRAIN, MATH_DATA = (ref.path for ref in SUITE.train)
GSM8K_TEST = SUITE.held_out[0].path


def load(name: str, source: DataSource):
    specs = taskfile.builtin()[0]
    return configured.load(specs[name], source, (SUITE, [specs[t] for t in SUITE.tasks]))


def test_gsm8k_record_in_llm_adapters_style():
    rec = configured.gsm8k({"question": "Q?", "answer": "She sold 48/2 = <<48/2=24>>24 clips.\nIn all "
                                                                "48+24 = <<48+24=72>>72.\n#### 1,072"})
    assert rec == {"instruction": "Q?", "input": "", "answer": "1072",
                   "output": "\nA: She sold 48/2 = 24 clips. In all 48+24 = 72. The answer is 1072."}
    with pytest.raises(ValueError, match="####"):
        configured.gsm8k({"question": "Q?", "answer": "no final line"})


def record(question: str, answer: str = "3") -> dict[str, str]:
    return {"instruction": question, "input": "", "output": f"\nA: ... The answer is {answer}.", "answer": answer}


def write_suite(root: Path, math_data: list | str | None = None, addsub: list | str | None = None) -> DataSource:
    """A miniature data folder with every file the math tasks read (unverified)."""
    tests = {"gsm8k": [record("Tom has 3 apples. How many?")], "addsub": [record("There are 7 crayons . Mary took 3 .")],
             "multiarith": [record("Sam bought 13 books.", "13.0")], "singleeq": [record("A bike costs 80.", "80")]}
    for name, rel in TEST_FILES.items():
        content = addsub if name == "addsub" and addsub is not None else tests[name]
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(content if isinstance(content, str) else json.dumps(content))
    (root / "gsm8k").mkdir(exist_ok=True)
    (root / GSM8K_TEST).write_text(json.dumps({"question": "Tom has 3 apples. How many?", "answer": "#### 3"}) + "\n")
    (root / GSM8K_TRAIN).write_text("".join(json.dumps({"question": f"Train q {i}?", "answer": f"x\n#### {i}"}) + "\n"
                                                       for i in range(3)))
    default = [record("There are 7 crayons. Mary took 3!"), record("New question?"), record("AQuA item", "C")]
    path = root / MATH_DATA
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(math_data if isinstance(math_data, str) else json.dumps(math_data or default))
    return DataSource(root, "test", verify=False)


def test_pool_drops_test_questions_whatever_their_spacing(tmp_path):
    source = write_suite(tmp_path)
    data = load("addsub", source)
    questions = [ex.question for ex in data.train]
    # the math_data item spelled "7 crayons. Mary took 3!" is AddSub's "7 crayons . Mary took 3 ." and is gone
    assert questions == ["Train q 0?", "Train q 1?", "Train q 2?", "New question?", "AQuA item"]
    assert "1 dropped" in data.split_note and data.test[0].gold == "3"
    assert data.shared_train == load("gsm8k", source).shared_train
    assert set(data.checksums) == {*TEST_FILES.values(), GSM8K_TRAIN, GSM8K_TEST,
                                   MATH_DATA}


@pytest.mark.parametrize("addsub, where", [
    ("[{", "not valid JSON"),
    (json.dumps([record("ok"), {"instruction": "x", "output": "y"}]), "record 1: missing or non-text field 'answer'"),
    (json.dumps([record("ok"), record("bad", "seven")]), "record 1: answer 'seven' is not a number"),
])
def test_malformed_math_file_names_file_and_record(tmp_path, addsub, where):
    source = write_suite(tmp_path, addsub=addsub)
    with pytest.raises(DataError) as err:
        load("addsub", source)
    assert str(tmp_path / TEST_FILES["addsub"]) in str(err.value) and where in str(err.value)


def test_malformed_file_through_the_cli_is_one_line(tmp_path, capsys, monkeypatch):
    write_suite(tmp_path, math_data=json.dumps([record("fine"), {"instruction": 3}]))
    # the miniature files differ from the pinned release
    monkeypatch.setattr(sources, "current", lambda: DataSource(tmp_path, "test", verify=False))
    monkeypatch.setenv(sources.DATA_ENV, str(tmp_path))
    argv = ["run", "--methods", "lora", "--tasks", "math", "--model", "tiny-llama", "--out", str(tmp_path / "out"),
            "--executor", "inline"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "math_data.json: record 1: missing or non-text field 'instruction'" in err


@needs_shared
def test_real_files(monkeypatch):
    monkeypatch.delenv(sources.DATA_ENV, raising=False)
    sizes = {"gsm8k": 1319, "addsub": 395, "multiarith": 600, "singleeq": 508}
    test_keys = set()
    for name, n in sizes.items():
        data = registry.load(name)
        pins = {r.path: r.sha256 for r in [*SUITE.train, *SUITE.held_out]} | {p: taskfile.builtin()[0][t].test.sha256
                                                                             for t, p in TEST_FILES.items()}
        assert len(data.test) == n and data.checksums == pins
        test_keys |= {question_key(ex.question) for ex in data.test}
    train = registry.load("gsm8k").train
    assert 8000 < len(train) < 9000 and not test_keys & {question_key(ex.question) for ex in train}
    # training on the whole suite uses the shared set once
    assert len(registry.train_examples(registry.suites()["math"])) == len(train)
    # the original GSM8K test release holds the same questions as LLM-Adapters' copy
    original = [json.loads(line) for line in (SHARED / GSM8K_TEST).read_text().splitlines()]
    assert {question_key(r["question"]) for r in original} == \
        {question_key(ex.question) for ex in registry.load("gsm8k").test}
    assert registry.get("gsm8k").protocols == ("generate",) and registry.get("gsm8k").chance is None
