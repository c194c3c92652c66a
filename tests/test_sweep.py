"""Sweep files: same run ids as bench run, statuses and the resubmission policy, lr selection on
held-out training items (inline executor: no worker processes, so these stay fast)."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from harness import cli, plan, records, sweep
from harness.config import RunConfig
from harness.driver import validation_items
from harness.schema.record import RunRecord
from harness.sweep.grid import grid, points
from tests import factories
from tasks import registry as tasks

SWEEP = """
model: tiny-llama
methods:
  lora: {lr: [1e-4, 3e-3], lora.r: 4}
  full: {}
tasks: [synthetic, arc_e]
per_task: true
seeds: [0, 1]
retention: none
budget: {max_steps: 2, eval_limit: 6}
set: {eval_batch_size: 8, lora.lora_alpha: 8}
"""


def _write(tmp_path, text, name="s.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def _ids(argv):
    """The run ids ``bench run ARGV`` would plan."""
    return [cfg.run_id for cfg in plan.runs(cli.run_grid(cli.build_parser().parse_args(argv)))]


def _planned(spec):
    return [cfg for point in points(spec) for cfg in plan.runs(grid(spec, point))]


@pytest.mark.needs_data
def test_a_sweep_has_the_run_ids_of_the_equivalent_bench_run_commands(tmp_path):
    spec = sweep.load(_write(tmp_path, SWEEP))
    got = [cfg.run_id for cfg in _planned(spec)]
    common = ["run", "--model", "tiny-llama", "--tasks", "synthetic,arc_e", "--per-task", "--seeds", "0,1",
              "--retention", "none", "--max-steps", "2", "--eval-limit", "6", "--set", "eval_batch_size=8"]
    lora = ["--methods", "lora", "--set", "lora.r=4", "--set", "lora.lora_alpha=8"]
    want = (_ids([*common, *lora, "--set", "lr=1e-4"]) + _ids([*common, *lora, "--set", "lr=0.003"])
            + _ids([*common, "--methods", "full"]))
    assert sorted(got) == sorted(want) and len(set(got)) == 12
    # the same grid as TOML
    toml = _write(tmp_path, """
model = "tiny-llama"
tasks = ["synthetic", "arc_e"]
per_task = true
seeds = [0, 1]
retention = "none"
budget = {max_steps = 2, eval_limit = 6}
set = {eval_batch_size = 8, "lora.lora_alpha" = 8}
[methods]
lora = {lr = [1e-4, 3e-3], "lora.r" = 4}
full = {}
""", "s.toml")
    spec = sweep.load(toml)
    assert sorted(cfg.run_id for cfg in _planned(spec)) == sorted(want)


@pytest.mark.needs_data
def test_dry_run_lists_statuses_and_the_resubmission_policy(tmp_path, capsys):
    path = _write(tmp_path, SWEEP)
    spec = sweep.load(path)
    cfgs = _planned(spec)
    for cfg, status, error in zip(cfgs, ["ok", "failed", "running", "failed"], [None, "OutOfMemoryError", None,
                                                                                "KeyboardInterrupt"]):
        factories.write(tmp_path, RunRecord(cfg.run_id, status, cfg.resolved(),
                                            error={"type": error, "message": ""} if error else None))
    assert cli.main(["sweep", str(path), "--dry-run", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "runs: 12 run(s), 10 to run" in out
    line = {cfg.run_id: next(ln for ln in out.splitlines() if cfg.run_id in ln) for cfg in cfgs[:5]}
    assert line[cfgs[0].run_id].endswith("status=ok  skip (done)")
    assert line[cfgs[1].run_id].endswith("status=failed  skip (failed; --retry-failed reruns it)")
    assert line[cfgs[2].run_id].endswith("status=interrupted  run")  # left running by a killed sweep
    assert line[cfgs[3].run_id].endswith("status=interrupted  run")  # Ctrl-C
    assert line[cfgs[4].run_id].endswith("status=new  run")
    assert cli.main(["sweep", str(path), "--dry-run", "--retry-failed", "--out", str(tmp_path)]) == 0
    assert "runs: 12 run(s), 11 to run" in capsys.readouterr().out


@pytest.mark.parametrize("text, needle", [
    ("methods: [lora]\ntasks: [synthetic]\nnosuch: 1\n", "unknown key(s) nosuch"),
    ("methods: [lora]\ntasks: [synthetic]\nbudget: {max_steps: 2, epochs: 1}\n", "max_steps or epochs"),
    ("methods: [lora]\ntasks: [synthetic]\nbudget: {max_steps: 2.5}\n", "max_steps '2.5' is not an integer"),
    ("methods: [lora]\ntasks: [synthetic]\nset: {dora.r: 4}\n", "not a method of the sweep"),
    ("methods: [lora]\ntasks: [synthetic]\nset: {nosuch: 4}\n", "unknown trainer key"),
    ("methods: [lora]\ntasks: [synthetic]\nselect: {over: lr, metric: acc}\n", "select.metric"),
    ("methods: [lora]\ntasks: [synthetic]\nselect: {over: lr, seeds: [5]}\n", "must be among seeds"),
    ("methods: [lora\ntasks: [synthetic]\n", "sweep file"),
    ("methods: [nosuch]\ntasks: [synthetic]\n", "valid: "),
])
def test_bad_sweep_files_are_one_line_errors(tmp_path, capsys, text, needle):
    assert cli.main(["sweep", str(_write(tmp_path, text)), "--dry-run", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and needle in err, err


def test_validation_items_are_training_items_held_out_of_training():
    cfg = RunConfig(model="tiny-llama", method="lora", method_config={}, train_tasks=("synthetic",),
                    eval_tasks=("synthetic",), validation=50)
    data = tasks.load("synthetic")
    held = validation_items(cfg, "synthetic")
    assert len(held) == 50 and len(set(held)) == 50
    assert set(held) <= set(data.train) and not set(held) & set(data.test)
    assert held == validation_items(RunConfig(**{**cfg.__dict__, "seed": 7}), "synthetic")  # same for every run
    assert "validation" not in RunConfig(**{**cfg.__dict__, "validation": 0}).resolved()  # old run ids kept


@pytest.mark.slow
def test_select_tunes_lr_on_validation_accuracy_then_runs_the_chosen_lr(tmp_path, capsys):
    path = _write(tmp_path, """
model: tiny-llama
methods: {lora: {lr: [3e-2, 1e-4]}}
tasks: synthetic
seeds: [0]
budget: {max_steps: 8, eval_limit: 6, eval_batch_size: 16}
select: {over: lr, metric: val_acc, validation: 24}
""")
    argv = ["sweep", str(path), "--out", str(tmp_path), "--executor", "inline", "--no-progress"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "tuning lr: 2 run(s) with 24 training items per task held out" in out
    assert "selection of lr by val_acc" in out
    df = pd.read_csv(tmp_path / "results.csv")
    val = df[(df.phase == "val") & (df.metric == "acc")]
    assert len(val) == 2 and (val.n == 24).all()
    scores = {json.loads((tmp_path / "runs" / rid / "run.json").read_text())["config"]["train"]["lr"]: v
              for rid, v in zip(val.run_id, val.value)}
    assert len(set(scores.values())) == 2  # 8 steps at lr 3e-2 vs 1e-4 give different validation accuracies
    best = max(scores, key=scores.get)
    chosen = pd.read_csv(tmp_path / "selection-s.csv").query("chosen")
    assert float(chosen.value.iloc[0]) == best
    final = _ids(["run", "--model", "tiny-llama", "--methods", "lora", "--tasks", "synthetic", "--seeds", "0",
                  "--max-steps", "8", "--eval-limit", "6", "--set", "eval_batch_size=16", "--set", f"lr={best}"])
    assert records.read_record(records.run_dir(tmp_path, final[0]) / "run.json").status == "ok"
    assert set(df[df.run_id == final[0]].phase) == {"before", "after", "train"}  # no held-out items in finals
    as_written = {3e-2: "3e-2", 1e-4: "1e-4"}[best]
    assert f"chosen lr={as_written}" in out
    # resubmitting does nothing and the dry run shows the decided selection
    assert cli.main(argv) == 0
    assert "running" not in capsys.readouterr().out
    assert cli.main(["sweep", str(path), "--dry-run", "--out", str(tmp_path)]) == 0
    assert "final runs (decided so far; 0 group(s) wait for tuning): 1 run(s), 0 to run" in capsys.readouterr().out
