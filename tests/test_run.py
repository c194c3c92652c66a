"""End to end through the CLI on the tiny model and the file-free synthetic task."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from harness import cli, driver, plan, records

BASE = ["run", "--model", "tiny-llama", "--tasks", "synthetic", "--max-steps", "4", "--eval-limit", "12",
        "--executor", "inline", "--no-progress", "--set", "eval_batch_size=8"]


def _run(tmp_path, *extra):
    return cli.main([*BASE, "--out", str(tmp_path), *extra])


def test_run_writes_records_and_skips_on_rerun(tmp_path, capsys):
    assert _run(tmp_path, "--methods", "lora,full") == 0
    runs = sorted((tmp_path / "runs").iterdir())
    assert len(runs) == 2
    for run in runs:
        rec = json.loads((run / "run.json").read_text())
        assert rec["status"] == "ok"
        steps = records.read_jsonl(run / "steps.jsonl")
        assert [s["step"] for s in steps] == [0, 1, 2, 3]
        for phase in ("before", "after"):
            samples = records.read_jsonl(run / "samples" / phase / "synthetic.jsonl")
            assert len(samples) == 12 and {"pred", "gold", "correct"} <= set(samples[0])
    df = pd.read_parquet(tmp_path / "results.parquet")
    csv = pd.read_csv(tmp_path / "results.csv")  # the same table (CSV loses dtypes, not values)
    assert list(csv.columns) == list(df.columns) and len(csv) == len(df) and len(df) > 0
    assert (csv.metric == df.metric).all() and (csv.run_id == df.run_id).all()
    assert np.allclose(csv.value.astype(float), df.value.astype(float), equal_nan=True)
    for method in ("lora", "full"):
        sub = df[df.method == method]
        metrics = set(sub.metric)
        assert {"step_time_s", "tokens_per_s", "peak_rss_bytes", "trainable_params", "activation_bytes",
                "acc", "acc_norm"} <= metrics
        acc = sub[sub.metric == "acc"]
        assert set(acc.phase) == {"before", "after"} and acc.stderr.notna().all()
    lora = df[(df.method == "lora") & (df.phase == "train")].set_index("metric").value
    full = df[(df.method == "full") & (df.phase == "train")].set_index("metric").value
    assert full["trainable_params"] > lora["trainable_params"]
    # the before evaluation is shared: identical per-sample results for both methods
    a, b = (records.read_jsonl(r / "samples" / "before" / "synthetic.jsonl") for r in runs)
    assert a == b
    printed = capsys.readouterr().out  # the end-of-run block: shared budget, then full against lora
    assert "budget shared by all 2 methods: lr 0.0002, max_steps 4" in printed and "--tune lr" in printed
    assert "comparison against lora" in printed and "full / lora step time: x" in printed
    assert _run(tmp_path, "--methods", "lora,full", "--baseline", "full") == 0
    printed = capsys.readouterr().out
    assert printed.count("already done, skipped") == 2 and "comparison against full" in printed


def test_failed_run_is_recorded_and_the_grid_goes_on(tmp_path, capsys):
    # LoRA on a layer the model lacks cannot be built (peft refuses it inside the run; target
    # names are checked before anything runs, layer indices are not): that run fails, the full
    # run still completes
    code = _run(tmp_path, "--methods", "lora,full", "--set", "lora.layers_to_transform=99")
    assert code == 1
    statuses = {}
    for run in (tmp_path / "runs").iterdir():
        rec = json.loads((run / "run.json").read_text())
        statuses[rec["config"]["method"]] = rec["status"]
        if rec["status"] == "failed":
            assert rec["error"]["type"] and rec["error"]["message"]
    assert statuses == {"lora": "failed", "full": "ok"}
    assert "FAILED" in capsys.readouterr().out


def test_nan_loss_is_a_failed_run(tmp_path):
    assert _run(tmp_path, "--methods", "full", "--set", "lr=1e30", "--set", "grad_clip=0") == 1
    rec = json.loads(next((tmp_path / "runs").iterdir()).joinpath("run.json").read_text())
    assert rec["status"] == "failed" and rec["error"]["type"] == "TrainingDiverged"


@pytest.mark.parametrize("args, needle", [
    (["--methods", "nosuch"], "valid: "),
    (["--methods", "lora", "--set", "lora.nosuch=1"], "valid keys: "),
    (["--methods", "lora", "--set", "nosuch=1"], "valid: "),
    (["--methods", "lora", "--set", "dora.r=1"], "not a method in this run"),
    (["--methods", "lora", "--tasks", "nosuch"], "valid"),
    # slow: the hub lookup of an unknown id waits out its retries (~20 s) before failing
    pytest.param(["--methods", "lora", "--model", "nosuch-org/nosuch-model"], "built-in name: smollm2-135m",
                 marks=pytest.mark.slow),
    (["--methods", "lora", "--set", "lora.r=abc"], "'r' of method 'lora' (--set): expected a number"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch, args, needle):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # an unknown hub id fails at once, without network retries
    argv = [*BASE, "--out", str(tmp_path), *args]
    for option in ("--tasks", "--model"):
        if option in args:
            i = argv.index(option)
            del argv[i:i + 2]
    assert cli.main(argv) == 2
    assert not (tmp_path / "runs").exists()  # refused before any run was started
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and needle in err and "Traceback" not in err


def test_worker_process_executor(tmp_path):
    """The default executor runs each run in a fresh process and still records it."""
    argv = [a for a in BASE if a not in ("--executor", "inline")]
    assert cli.main([*argv, "--out", str(tmp_path), "--methods", "lora", "--max-steps", "2"]) == 0
    rec = json.loads(next((tmp_path / "runs").iterdir()).joinpath("run.json").read_text())
    assert rec["status"] == "ok" and rec["costs"]["peak_rss_bytes"][0] > 0


@pytest.mark.slow
@pytest.mark.needs_data
def test_readme_tiny_command_with_suite_retention(tmp_path):
    """arc_e on tiny-llama with ``--retention auto``: every other commonsense task is scored before
    and after, so each must fit the tiny model's context."""
    argv = ["run", "--methods", "lora", "--tasks", "arc_e", "--model", "tiny-llama", "--max-steps", "2",
            "--eval-limit", "20", "--out", str(tmp_path), "--executor", "inline", "--no-progress",
            "--retention", "auto"]
    assert cli.main(argv) == 0
    df = pd.read_csv(tmp_path / "results.csv")
    retention = {"boolq", "piqa", "siqa", "hellaswag", "winogrande", "arc_c", "obqa"}
    acc = df[df.metric == "acc"]
    assert set(acc.task) == retention | {"arc_e"} and set(acc.phase) == {"before", "after"}
    assert retention <= set(df[df.metric == "forgetting"].task)


@pytest.mark.needs_data
def test_by_default_only_the_trained_tasks_are_evaluated():
    """A one-task run scores that task only; the suite's other tasks are scored when asked."""
    args = cli.build_parser().parse_args(["run", "--methods", "lora", "--tasks", "arc_e", "--model", "tiny-llama"])
    (cfg,) = plan.runs(cli.run_grid(args))
    assert cfg.eval_tasks == ("arc_e",) and cfg.retention_tasks == ()
    asked = cli.build_parser().parse_args(["run", "--methods", "lora", "--tasks", "arc_e", "--retention", "auto"])
    assert set(plan.runs(cli.run_grid(asked))[0].retention_tasks) == {"boolq", "piqa", "siqa", "hellaswag",
                                                                       "winogrande", "arc_c", "obqa"}


@pytest.mark.needs_data
@pytest.mark.slow  # the hub lookup of an unknown id waits out its retries (~20 s)
def test_eval_refuses_an_unresolvable_model_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    argv = ["eval", "--model", "nosuch-org/nosuch-model", "--tasks", "arc_e", "--out", str(tmp_path)]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "could not load model 'nosuch-org/nosuch-model'" in err


EVAL = ["eval", "--model", "tiny-llama", "--tasks", "synthetic", "--eval-limit", "12", "--set", "eval_batch_size=8",
        "--no-progress"]


def test_eval_records_a_model_only_run(tmp_path, capsys):
    assert cli.main([*EVAL, "--out", str(tmp_path)]) == 0
    [run] = (tmp_path / "runs").iterdir()
    rec = json.loads((run / "run.json").read_text())
    assert rec["status"] == "ok" and rec["config"]["method"] == "none" and rec["config"]["eval"]["eval_limit"] == 12
    # the settings once each: evaluation keys under config.eval only, no duplicate train_config
    assert not set(rec["config"]["train"]) & set(rec["config"]["eval"]) and "train_config" not in rec
    assert rec["evaluated"] == {"model": "tiny-llama"}  # what it scored: the base model, no adapter
    assert [(e["task"], e["phase"]) for e in rec["evals"]] == [("synthetic", "eval")]
    assert len(records.read_jsonl(run / "samples" / "eval" / "synthetic.jsonl")) == 12
    df = pd.read_csv(tmp_path / "results.csv")
    assert set(df.phase) == {"eval"} and "synthetic" in capsys.readouterr().out


def test_a_failed_evaluation_is_recorded_like_a_failed_run(tmp_path, capsys, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("scorer broke")

    monkeypatch.setattr(driver, "evaluate_task", broken)
    assert cli.main([*EVAL, "--out", str(tmp_path)]) == 1
    rec = json.loads(next((tmp_path / "runs").iterdir()).joinpath("run.json").read_text())
    assert rec["status"] == "failed" and rec["error"]["type"] == "RuntimeError" and rec["ended"]
    assert "FAILED (RuntimeError: scorer broke)" in capsys.readouterr().out
    assert pd.read_csv(tmp_path / "results.csv").status.tolist() == ["failed"]


@pytest.mark.parametrize("args, needle", [
    (["--set", "lr=1e-3"], "not an evaluation key; valid: eval_batch_size, eval_limit, num_beams, max_new_tokens"),
    (["--set", "num_beams=two"], "'num_beams' of the evaluation: expected a number"),
])
def test_eval_takes_only_evaluation_keys(tmp_path, capsys, args, needle):
    assert cli.main([*EVAL, "--out", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and needle in err
    assert not (tmp_path / "runs").exists()


def test_a_forced_rerun_starts_method_files_fresh(tmp_path):
    """LoSiA's subnets.jsonl goes through the run folder: a --force rerun rewrites it instead of
    appending after the last run's lines, so it is as long as a fresh run's."""
    losia = ["--methods", "losia", "--set", "losia.period=2"]
    assert _run(tmp_path / "fresh", *losia) == 0
    assert _run(tmp_path / "again", *losia) == 0 and _run(tmp_path / "again", *losia, "--force") == 0
    fresh, again = ((tmp_path / out / "runs").glob("*/subnets.jsonl") for out in ("fresh", "again"))
    fresh, again = next(fresh).read_text().splitlines(), next(again).read_text().splitlines()
    assert len(fresh) > 0 and len(again) == len(fresh) and again == fresh


def test_decoding_settings_do_not_make_a_method_variant(tmp_path):
    """num_beams and max_new_tokens change how a run is scored, not what it trained: the same label
    (tables compare them column by column instead)."""
    assert _run(tmp_path, "--methods", "lora") == 0
    assert _run(tmp_path, "--methods", "lora", "--set", "num_beams=2", "--set", "max_new_tokens=8") == 0
    df = pd.read_csv(tmp_path / "results.csv")
    assert df.run_id.nunique() == 2 and set(df.label) == {"lora"}
    assert set(df.num_beams.dropna()) == {1, 2}
