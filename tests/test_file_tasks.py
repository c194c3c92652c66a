"""``--tasks file:PATH``: any LLM-Adapters-format file becomes a task, answer type inferred or given."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness import cli, records
from tasks import files, llm_adapters, registry
from tasks.sources import DataError, sha256


def rec(instruction: str, answer: str, output: str | None = None) -> dict[str, str]:
    return {"instruction": instruction, "input": "", "output": output or f"the correct answer is {answer}",
            "answer": answer}


def mc(i: int, answer: str) -> dict[str, str]:
    """An LLM-Adapters multiple-choice record with its options in the instruction."""
    text = (f"Please choose the correct answer to the question: question {i}?\n\nAnswer1: red Answer2: green "
            f"Answer3: blue\n\nAnswer format: answer1/answer2/answer3")
    return rec(text, answer)


def write(path: Path, content: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


@pytest.mark.parametrize("answers, answer_type, vocabulary", [
    (["18", "2.5", "1,000"], "number", ()),
    (["option2", "option1", "option2"], "choice", ("option1", "option2")),
    (["true", "false", "true"], "choice", ("true", "false")),
    (["yes", "no", "maybe"], "choice", ("maybe", "no", "yes")),
])
def test_inferred_answer_types(answers, answer_type, vocabulary):
    records_ = [rec(f"q{i}", a) for i, a in enumerate(answers)]
    assert files.infer(records_, "x.json") == (answer_type, vocabulary)


def test_answer_format_lines_give_the_vocabulary_and_likelihood(tmp_path):
    path = write(tmp_path / "mc.json", [mc(0, "answer3"), mc(1, "answer1")])
    task = registry.get(f"file:{path}")
    data = registry.load(task)
    assert task.vocabulary == ("answer1", "answer2", "answer3") and task.protocols == ("likelihood", "generate")
    ex = data.test[0]
    assert ex.choices == ("red", "green", "blue") and ex.gold == 2 and ex.answer == "answer3"
    assert task.requests(ex)[0] == ("Question: question 0?\nAnswer:", " red")
    assert data.checksums == {str(path): sha256(path)} and data.train == [] and "evaluation only" in data.split_note
    assert task.chance == pytest.approx(1 / 3)


def test_folder_with_train_split_and_sidecar(tmp_path):
    folder = tmp_path / "mytask"
    write(folder / "test.json", [rec("What is 2+2?", "4"), rec("And 3+3?", "6")])
    write(folder / "train.json", [rec("What is 2+2?", "4"), rec("1+1?", "2"), rec("5+5?", "10")])
    write(folder / "task.yaml", "answer_type: number\nmax_new_tokens: 64\ndescription: toy sums\n")
    task = registry.get(f"file:{folder}")
    data = registry.load(task)
    assert (task.answer_type, task.max_new_tokens, task.description, task.protocols) == ("number", 64, "toy sums",
                                                                                          ("generate",))
    assert [ex.question for ex in data.train] == ["1+1?", "5+5?"]  # the train copy of a test item is dropped
    assert len(data.checksums) == 3 and task.name == f"file:{folder.resolve()}"


def test_sidecar_vocabulary_overrides_inference(tmp_path):
    path = write(tmp_path / "labels.json", [rec("Is it A or B? A", "A"), rec("Is it A or B? B", "B")])
    write(tmp_path / "labels.task.json", {"vocabulary": ["A", "B", "C"]})
    task = registry.get(f"file:{path}")
    assert task.vocabulary == ("A", "B", "C") and task.protocols == ("generate",)


@pytest.mark.parametrize("content, where", [
    ("[{", "not valid JSON"),
    ([rec("q", "true"), {"instruction": "q2", "output": "o"}], "record 1: missing or non-text field 'answer'"),
    ([mc(0, "answer1"), mc(1, "answer7")], "record 1: answer 'answer7' is not among the choices"),
])
def test_malformed_files_name_file_and_record(tmp_path, content, where):
    path = write(tmp_path / "bad.json", content)
    if "answer7" in where:  # the vocabulary comes from the sidecar, so answer7 is not in it
        write(tmp_path / "task.yaml", "vocabulary: [answer1, answer2, answer3]\n")
    with pytest.raises(DataError) as err:
        files.make_task(str(path))
    assert str(path) in str(err.value) and where in str(err.value)


def test_cli_errors_are_one_line(tmp_path, capsys):
    bad = write(tmp_path / "bad.json", [rec("q", "true"), {"instruction": 1}])
    for argv in (["eval", "--model", "tiny-llama", "--tasks", f"file:{bad}", "--out", str(tmp_path)],
                 ["eval", "--model", "tiny-llama", "--tasks", f"file:{tmp_path / 'missing.json'}", "--out", str(tmp_path)]):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and ("record 1" in err or "no such file" in err)


def test_file_task_trains_and_evaluates_end_to_end(tmp_path):
    folder = tmp_path / "colors"
    write(folder / "test.json", [mc(i, f"answer{1 + i % 3}") for i in range(6)])
    write(folder / "train.json", [mc(i, f"answer{1 + i % 3}") for i in range(6, 30)])
    argv = ["run", "--model", "tiny-llama", "--tasks", f"file:{folder}", "--methods", "lora", "--max-steps", "2",
            "--eval-limit", "6", "--executor", "inline", "--no-progress", "--out", str(tmp_path / "out")]
    assert cli.main(argv) == 0
    run = next((tmp_path / "out" / "runs").iterdir())
    rec_ = json.loads((run / "run.json").read_text())
    assert rec_["status"] == "ok" and rec_["config"]["protocol"] == "likelihood"
    name = f"file:{folder.resolve()}"
    assert rec_["data"][name]["checksums"] == {str(folder / "test.json"): sha256(folder / "test.json"),
                                               str(folder / "train.json"): sha256(folder / "train.json")}
    assert len(records.read_jsonl(records.samples_path(run, "after", name))) == 6


def aqua(i: int, answer: str) -> dict[str, str]:
    """An AQuA-style record: letter options listed in the question, a worked solution as output."""
    text = f"What is {i} + 1? Answer Choices: (A) {i} (B) {i + 1} (C) {i + 2} (D) {i + 3} (E) None of these"
    return rec(text, answer, output=f"\nRationale: {i} + 1 = {i + 1}. The answer is ({answer}).")


def test_letters_come_from_the_listed_options_not_the_answers(tmp_path):
    """A slice where E is never the answer still extracts E, and chance is 1/5."""
    path = write(tmp_path / "aqua.json", [aqua(i, "B") for i in range(3)] + [aqua(9, "A")])
    task = registry.get(f"file:{path}")
    data = registry.load(task)
    assert task.vocabulary == ("A", "B", "C", "D", "E") and task.chance == pytest.approx(0.2)
    assert data.test[0].labels == ("A", "B", "C", "D", "E") and task.protocols == ("generate",)
    assert llm_adapters.judge("choice", task.extraction_vocabulary(data.test[0]), "B", "E: none fits") == ("E", False)


def test_generation_budget_follows_llm_adapters(tmp_path):
    """Worked solutions (AQuA) get their math evaluate.py's 256 new tokens; one-liners 32."""
    assert registry.get(f"file:{write(tmp_path / 'aqua.json', [aqua(1, 'B')])}").max_new_tokens == 256
    assert registry.get(f"file:{write(tmp_path / 'mc.json', [mc(0, 'answer1')])}").max_new_tokens == 32


def test_json_lines_get_a_pointer_to_task_files(tmp_path):
    path = tmp_path / "valid.jsonl"
    path.write_text('{"goal": "g", "sol1": "a", "sol2": "b"}\n{"goal": "h", "sol1": "a", "sol2": "b"}\n')
    with pytest.raises(DataError) as err:
        files.make_task(str(path))
    assert "looks like JSON lines" in str(err.value) and "data.format: jsonl" in str(err.value)
