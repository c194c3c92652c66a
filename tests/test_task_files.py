"""Task files: a user's YAML evaluates their own benchmark, bad files fail in one line, and a
new task is one new file."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from harness import cli
from tasks import registry, sources, taskfile
from tasks.sources import DataError

FIXTURE = Path(__file__).parent / "fixtures" / "piqa_original"
SHARED = sources.resolve_data_dir()[0]  # the configured folder (tests/conftest.py)
needs_shared = pytest.mark.needs_data
USER_YAML = (FIXTURE / "piqa.yaml").read_text()


def test_piqa_original_release_through_a_user_task_file():
    task = registry.get(str(FIXTURE / "piqa.yaml"))
    data = registry.load(task)
    assert task.name == str(FIXTURE / "piqa.yaml") and registry.report_headers()[task.name] == "my_piqa"
    assert task.protocols == ("likelihood", "generate") and task.chance == 0.5
    assert [ex.gold for ex in data.test] == [0, 1, 0] and data.train == []
    ex = data.test[1]
    assert task.requests(ex) == [("Question: To cool a hot drink quickly,\nAnswer:", " put it in the oven."),
                                 ("Question: To cool a hot drink quickly,\nAnswer:", " stir in a few ice cubes.")]
    assert ex.answer == "solution2" and ex.instruction.endswith("Answer format: solution1/solution2")
    assert set(data.checksums) == {"valid.jsonl", "valid-labels.lst"}


@needs_shared
def test_user_yaml_on_piqa_original_format_gives_the_builtin_choices(tmp_path):
    """PIQA's release format written from the benchmark's PIQA items: same items, same choices."""
    builtin = registry.get("piqa")
    items = {ex.id: ex for ex in registry.load("piqa").test[:40]}
    records = json.loads((SHARED / "llm-adapters/dataset/piqa/test.json").read_text())
    rows, labels = [], []
    from tasks.llm_adapters import parse_instruction

    for rec in records[:60]:
        goal, (sol1, sol2), _ = parse_instruction(rec["instruction"], taskfile.builtin()[0]["piqa"].data_header)
        rows.append(json.dumps({"goal": goal, "sol1": sol1, "sol2": sol2}))
        labels.append(str(int(rec["answer"] == "solution2")))
    (tmp_path / "valid.jsonl").write_text("\n".join(rows) + "\n")
    (tmp_path / "valid-labels.lst").write_text("\n".join(labels) + "\n")
    (tmp_path / "piqa.yaml").write_text(USER_YAML.replace("my_piqa", "piqa_release"))
    task = registry.get(str(tmp_path / "piqa.yaml"))
    mine = {ex.id: ex for ex in registry.load(task).test}
    shared = sorted(set(items) & set(mine))
    assert len(shared) >= 20
    for i in shared:
        assert (mine[i].choices, mine[i].gold) == (items[i].choices, items[i].gold)
        assert task.requests(mine[i]) == builtin.requests(items[i])


@pytest.mark.parametrize("edit, message", [
    (lambda y: y.replace("task: my_piqa", "task: boolq"), "field 'task': 'boolq' is a built-in name"),
    (lambda y: y.replace("format: jsonl", "format: csv"), "field 'data.format': 'csv' is not one of"),
    (lambda y: y + "oops: [unclosed\n", "not valid YAML"),
    (lambda y: y.replace("format: jsonl", "format: jsonl\n  colour: red"), "field 'data.colour': unknown key"),
    (lambda y: y.replace("labels: solution", "labels: solution\n  budget: 9"), "field 'generate.budget': unknown key"),
    (lambda y: y.replace("  test: {file: valid.jsonl, labels: valid-labels.lst}\n", ""),
     "field 'data.test': missing (required)"),
    (lambda y: y + "likelihood: {metrics: [f1]}\n", "field 'likelihood.metrics': expected a non-empty list"),
])
def test_bad_task_files_name_the_file_and_field(tmp_path, edit, message):
    path = tmp_path / "bad.yaml"
    path.write_text(edit(USER_YAML))
    with pytest.raises(DataError) as err:
        registry.get(str(path))
    assert str(path) in str(err.value) and message in str(err.value) and "\n" not in str(err.value)


def test_bad_records_and_labels_name_the_file(tmp_path):
    shutil.copy(FIXTURE / "valid.jsonl", tmp_path / "valid.jsonl")
    (tmp_path / "piqa.yaml").write_text(USER_YAML.replace("my_piqa", "short_labels"))
    (tmp_path / "valid-labels.lst").write_text("0\n1\n")
    with pytest.raises(DataError, match="2 labels for 3 records"):
        registry.load(str(tmp_path / "piqa.yaml"))
    (tmp_path / "other.yaml").write_text(USER_YAML.replace("my_piqa", "other").replace("goal,", "question,"))
    (tmp_path / "valid-labels.lst").write_text("0\n1\n0\n")
    with pytest.raises(DataError, match=r"valid.jsonl: record 0: no field 'question'"):
        registry.load(str(tmp_path / "other.yaml"))


def test_bench_eval_runs_a_user_task_file_and_prints_its_name(tmp_path, capsys):
    """The task is named by its file's path in full (a worker process reads the file again)."""
    argv = ["eval", "--model", "tiny-llama", "--tasks", str(FIXTURE / "piqa.yaml"), "--out", str(tmp_path),
            "--no-progress"]
    assert cli.main(argv) == 0
    assert f"\n{FIXTURE / 'piqa.yaml'} " in capsys.readouterr().out
    assert cli.main(["eval", "--model", "tiny-llama", "--tasks", str(tmp_path / "nope.yaml"), "--out",
                     str(tmp_path)]) == 2
    assert "nope.yaml not found" in capsys.readouterr().err


def test_adding_a_task_is_one_new_file(tmp_path, monkeypatch):
    """A file dropped into the config folder is a built-in task: listed, loadable, reported."""
    configs = tmp_path / "configs"
    shutil.copytree(taskfile.CONFIG_DIR, configs)
    shutil.copy(FIXTURE / "valid.jsonl", tmp_path / "valid.jsonl")
    shutil.copy(FIXTURE / "valid-labels.lst", tmp_path / "valid-labels.lst")
    (configs / "mini.yaml").write_text(USER_YAML.replace("my_piqa", "mini").replace("valid", "../valid")
                                       + "report: {header: Mini, column: 9}\n")
    monkeypatch.setattr(taskfile, "CONFIG_DIR", configs)
    taskfile.builtin.cache_clear()
    try:
        assert registry.names()[8] == "mini" and registry.report_headers()["mini"] == "Mini"
        assert any(line.startswith("mini ") for line in registry.describe())
        assert len(registry.load("mini").test) == 3
    finally:
        taskfile.builtin.cache_clear()


def test_bench_run_trains_on_a_user_task_file_in_a_worker_process(tmp_path):
    """The worker gets only the task's name, the file's path, and reads the file again."""
    rows = [json.dumps({"goal": f"goal number {i}", "sol1": f"first {i}", "sol2": f"second {i}"}) for i in range(20)]
    (tmp_path / "valid.jsonl").write_text("\n".join(rows) + "\n")
    (tmp_path / "valid-labels.lst").write_text("".join(f"{i % 2}\n" for i in range(20)))
    yaml = USER_YAML.replace("my_piqa", "mini_run").replace("valid-labels.lst}\n", "valid-labels.lst}\n  train: carve\n")
    (tmp_path / "mini.yaml").write_text(yaml)
    argv = ["run", "--methods", "lora", "--model", "tiny-llama", "--tasks", str(tmp_path / "mini.yaml"),
            "--max-steps", "2", "--eval-limit", "4", "--retention", "none", "--no-progress", "--out", str(tmp_path / "out")]
    assert cli.main(argv) == 0
    record = json.loads(next((tmp_path / "out" / "runs").glob("*/run.json")).read_text())
    assert record["status"] == "ok" and record["config"]["train_tasks"] == [str(tmp_path / "mini.yaml")]
