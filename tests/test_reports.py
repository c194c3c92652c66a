"""Reports from synthetic run folders shaped like the driver's: tables, plots, HTML, CLI."""
from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import io
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from reports import render
from reports.cli import add_parsers
from reports.commands import commands
from reports.load import ReportError, load_results
from reports.plots import pareto_front
from reports.tables import accuracy_tables, custom_table, efficiency_tables, forgetting_tables, ranks_tables

TRAIN_DEFAULTS = {"lr": 2e-4, "batch_size": 8, "max_steps": 20, "eval_limit": 50, "eval_batch_size": 32,
                  "timing_warmup_steps": 3, "precision": "auto"}
GIB = 2**30


def make_run(root: Path, method: str, seed: int, accs: dict[str, float], *, model: str = "smollm2-135m",
             before: dict[str, float] | None = None, protocol: str = "likelihood", data_sha: str = "d1",
             eval_limit: int = 50, method_config: dict[str, Any] | None = None, costs: dict[str, float] | None = None,
             device: tuple[str, str] = ("cpu", "Test CPU"), status: str = "ok",
             method_record: dict[str, Any] | None = None, extra_evals: list[dict[str, Any]] | None = None,
             train_tasks: list[str] | None = None, command: list[str] | None = None) -> str:
    """Write runs/<id>/run.json (+ steps.jsonl) the way harness.driver.run_one does."""
    tasks = train_tasks or list(accs)
    digest = hashlib.sha256(json.dumps([method_config, protocol, data_sha, eval_limit, device, tasks]).encode())
    run_id = f"{model}__{method}__{len(tasks)}tasks__s{seed}__{digest.hexdigest()[:10]}"
    chance = {"boolq": 0.5, "piqa": 0.5, "arc_e": 0.25}
    evals = []
    for phase, values in (("before", before or {}), ("after", accs)):
        for task, acc in values.items():
            evals.append({"task": task, "phase": phase, "protocol": protocol, "data_sha256": data_sha,
                          "chance": chance.get(task, 0.25), "shots": 0, "split_note": "",
                          "metrics": [{"name": "acc", "value": acc, "stderr": 0.01, "n": eval_limit},
                                      {"name": "acc_norm", "value": acc - 0.01, "stderr": 0.01, "n": eval_limit}]})
    evals += extra_evals or []
    figures = {"step_time_s": 0.5, "step_time_p10_s": 0.45, "step_time_p90_s": 0.55, "step_time_steps": 17,
               "tokens_per_s": 2000.0, "train_time_s": 10.0, "calibration_time_s": 0.0, "peak_rss_bytes": 2 * GIB,
               "rss_before_train_bytes": GIB, "trainable_params": 1_000_000, "total_params": 134_515_008,
               "trainable_pct": 0.743, "param_bytes": 538_060_032, "grad_bytes": 4_000_000,
               "optimizer_state_bytes": 8_000_000, "activation_bytes": 50 * 2**20, "flops_per_step": 1e12,
               "final_loss": 1.2, "steps": 20, **(costs or {})}
    units = {"step_time_steps": "count", "tokens_per_s": "tokens/s", "trainable_params": "count",
             "total_params": "count", "trainable_pct": "%", "flops_per_step": "flops", "final_loss": "nats",
             "steps": "count"}
    record = {
        "run_id": run_id, "status": status,
        "started": "2025-01-01T00:00:00+00:00", "ended": "2025-01-01T00:10:00+00:00",
        "config": {"model": model, "method": method, "method_config": method_config or {"r": 8},
                   "train_tasks": tasks, "eval_tasks": tasks, "seed": seed,
                   "train": {**TRAIN_DEFAULTS, "eval_limit": eval_limit}, "protocol": protocol},
        "model_note": "", "evals": evals,
        "environment": {"packages": {"torch": "2.13.0", "transformers": "4.57.0", "peft": "0.19.0"},
                        "torch_build": {"version": "2.13.0", "cuda": None}, "python": "3.12.0",
                        "device": {"type": device[0], "name": device[1], "count": 1},
                        "git_commit": "abc1234def", "git_dirty": False},
        "costs": {k: [v, units.get(k, "bytes" if k.endswith("bytes") else "s")] for k, v in figures.items()},
        "method_record": method_record or {},
    }
    if command:
        record["command"] = command
    if status != "ok":
        record.update(error={"type": "RuntimeError", "message": "CUDA out of memory"}, costs={}, evals=[])
    folder = root / "runs" / run_id
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps(record))
    (folder / "steps.jsonl").write_text("".join(
        json.dumps({"step": i, "loss": 2.0 - 0.04 * i - 0.01 * seed, "lr": 2e-4, "step_time_s": 0.5, "tokens": 1000,
                    "profiled": i == 2}) + "\n" for i in range(20)))
    return run_id


def _ev(task: str, phase: str, acc: float) -> dict[str, Any]:
    return {"task": task, "phase": phase, "protocol": "likelihood", "data_sha256": "d1", "chance": 0.25,
            "metrics": [{"name": "acc", "value": acc, "stderr": 0.01, "n": 50}]}


def standard_runs(root: Path) -> Path:
    """lora and losia x two seeds on three commonsense tasks, one dora run on another protocol, one failure."""
    base = {"boolq": 0.60, "piqa": 0.55, "arc_e": 0.40}
    make_run(root, "lora", 0, {"boolq": 0.70, "piqa": 0.60, "arc_e": 0.50}, before=base,
             command=["bench", "run", "--methods", "lora,losia", "--tasks", "boolq,piqa,arc_e", "--seeds", "0,1"])
    make_run(root, "lora", 1, {"boolq": 0.72, "piqa": 0.62, "arc_e": 0.48}, before=base)
    losia_costs = {"step_time_s": 0.4, "peak_rss_bytes": 3 * GIB, "trainable_params": 2_000_000,
                   "trainable_pct": 1.486, "tokens_per_s": 2500.0}
    make_run(root, "losia", 0, {"boolq": 0.74, "piqa": 0.58, "arc_e": 0.52}, before=base, costs=losia_costs,
             method_record={"variant": "losia", "reselection_fields": ["step", "layer", "matrix", "strategy",
                                                                       "rows_kept", "cols_kept"],
                            "reselections": [[5, 0, "q_proj", "periodic", 0.5, 0.5],
                                             [10, 1, "v_proj", "periodic", 0.4, 0.6],
                                             [15, "lm_head", "lm_head", "periodic", 0.3, 0.3]]})
    make_run(root, "losia", 1, {"boolq": 0.76, "piqa": 0.58, "arc_e": 0.54}, before=base, costs=losia_costs)
    make_run(root, "dora", 0, {"boolq": 0.99, "piqa": 0.99, "arc_e": 0.99}, protocol="generation")
    make_run(root, "pissa", 0, {"boolq": 0.1}, status="failed")
    return root


def extra_runs(root: Path) -> Path:
    """Retention evaluations, sequential stages and a rank allocation: the optional report parts."""
    for method, drop in (("lora", 0.05), ("losia", 0.02)):
        make_run(root, method, 0, {"boolq": 0.7}, before={"boolq": 0.6}, method_config={"r": 4},
                 extra_evals=[_ev("arc_e", "before", 0.40), _ev("arc_e", "after", 0.40 - drop)])
    tasks = ["boolq", "piqa", "arc_e"]
    for method, loss in (("lora", 0.10), ("losia", 0.03)):  # R[i][j]: 0.7 when just trained, decaying after
        evals = [_ev(t, f"stage-{i + 1}", 0.5 + (0.2 if j == i else 0.2 - loss * (i - j) if j < i else 0.0))
                 for i in range(3) for j, t in enumerate(tasks)]
        make_run(root, method, 0, {}, train_tasks=tasks, extra_evals=evals, method_config={"r": 2})
    ranks = {f"model.layers.{layer}.self_attn.{m}": r for layer in range(3) for m, r in (("q_proj", 4 + layer),
                                                                                       ("v_proj", 12 - layer))}
    make_run(root, "sensitivity-lora", 0, {"boolq": 0.71}, before={"boolq": 0.6},
             method_record={"ranks": {**ranks, "lm_head": 2}}, costs={"calibration_time_s": 3.2})
    return root


@pytest.fixture
def results(tmp_path: Path) -> Path:
    return standard_runs(tmp_path / "results")


def _table(tables: list, name: str):
    return next(t for t in tables if t.name == name)


def _row(table, method: str):
    return next(r for r in table.rows if r.keys[1] == method)


# -- tables ----------------------------------------------------------------------------------

def test_commonsense_table_values_seeds_and_bold(results: Path) -> None:
    table = _table(accuracy_tables(load_results([results])), "commonsense")
    assert table.columns == ["boolq", "piqa", "arc_e", "Avg"]  # paper order, Avg last
    lora, losia = _row(table, "lora"), _row(table, "losia")
    assert lora.cells["boolq"].mean == pytest.approx(71.0) and lora.cells["boolq"].n == 2
    assert lora.cells["boolq"].std == pytest.approx(1.41421, rel=1e-4)
    assert losia.cells["Avg"].mean == pytest.approx(62.0)  # per-seed averages 61.33 and 62.67
    assert losia.cells["Avg"].std == pytest.approx(0.9428, rel=1e-3)  # spread of the average, not of tasks
    # two seeds and no per-item samples: Welch across seeds cannot separate them (75 vs 71: p = 0.11)
    assert {losia.cells["boolq"].mark, lora.cells["boolq"].mark, lora.cells["piqa"].mark} == {"tie"}
    assert not any(c.best for r in table.rows for c in r.cells.values())
    base = _row(table, "base (before training)")
    assert base.reference and base.cells["boolq"].mean == pytest.approx(60.0) and not base.cells["boolq"].best
    assert _row(table, "chance").cells["arc_e"].mean == pytest.approx(25.0)
    md = render.to_markdown(table)
    assert "| BoolQ | PIQA | ARC-e | Avg |" in md
    assert "| smollm2-135m | losia | 75.0 ± 1.4 ≈ | 58.0 ± 0.0 ≈ | 53.0 ± 1.4 ≈ | 62.0 ± 0.9 ≈ |" in md
    assert "| smollm2-135m | lora | 71.0 ± 1.4 ≈ | 61.0 ± 1.4 ≈ | 49.0 ± 1.4 ≈ | 60.3 ± 0.5 ≈ |" in md
    assert "Welch's t-test across seeds" in md and "level 0.05" in md


def test_mixed_protocol_is_refused_and_named(results: Path) -> None:
    res = load_results([results])
    table = _table(accuracy_tables(res), "commonsense")
    assert "dora" not in {r.keys[1] for r in table.rows}
    assert len(table.dropped) == 1 and "dora" in table.dropped[0] and "protocol=generation" in table.dropped[0]
    assert "dropped" in render.to_markdown(table)
    mixed = _table(accuracy_tables(res, allow_mixed=True), "commonsense")
    assert _row(mixed, "dora").cells["boolq"].mark == "untested"  # 99% now included (one run: no test), mixed
    assert "MIXED" in mixed.dropped[0]


def test_checksum_and_eval_limit_mismatches_are_dropped(tmp_path: Path) -> None:
    root = tmp_path / "r"
    for seed in (0, 1):
        make_run(root, "lora", seed, {"boolq": 0.7})
    make_run(root, "full", 0, {"boolq": 0.9}, data_sha="other")
    make_run(root, "dora", 0, {"boolq": 0.9}, eval_limit=0)
    table = _table(accuracy_tables(load_results([root])), "commonsense")
    assert [r.keys[1] for r in table.rows if not r.reference] == ["lora"]
    text = " ".join(table.dropped)
    assert "data_sha256=other (kept d1)" in text and "eval_limit=0 (kept 50)" in text


def test_variants_are_separate_rows_not_seeds(tmp_path: Path) -> None:
    root = tmp_path / "r"
    make_run(root, "lora", 0, {"boolq": 0.7}, method_config={"r": 8})
    make_run(root, "lora", 0, {"boolq": 0.8}, method_config={"r": 16})
    table = _table(accuracy_tables(load_results([root])), "commonsense")
    assert {r.keys[1]: r.cells["boolq"].n for r in table.rows if not r.reference} == {"lora (r=8)": 1, "lora (r=16)": 1}


def test_efficiency_table(results: Path, tmp_path: Path) -> None:
    make_run(results, "lora", 0, {"boolq": 0.7, "piqa": 0.6, "arc_e": 0.5}, device=("cuda", "NVIDIA H100"),
             eval_limit=10, costs={"peak_mem_allocated_bytes": 5 * GIB})
    tables = efficiency_tables(load_results([results]))
    cpu = _table(tables, "efficiency-cpu-test-cpu")
    gpu = _table(tables, "efficiency-cuda-nvidia-h100")
    assert cpu.header("peak_mem_bytes") == "Peak RSS (GiB)" and gpu.header("peak_mem_bytes") == "Peak alloc (GiB)"
    lora, losia = _row(cpu, "lora"), _row(cpu, "losia")
    assert cpu.cell_text(losia, "peak_mem_bytes") == "3.00 ± 0.00"
    assert cpu.cell_text(lora, "step_time_s") == "0.500 ± 0.000 ≈"  # p10-p90 of the timed steps overlap
    assert cpu.cell_text(losia, "trainable_params").startswith("2M")
    assert cpu.cell_text(lora, "trainable_pct").startswith("0.743")
    assert losia.cells["tokens_per_s"].best and lora.cells["peak_mem_bytes"].mark == "tie"  # with dora's 2.00
    assert cpu.cell_text(lora, "activation_bytes").startswith("50.0")
    assert not any(c.best for r in cpu.rows for k, c in r.cells.items() if k == "train_time_s")  # all tie
    assert gpu.cell_text(gpu.rows[0], "peak_mem_bytes") == "5.00"


def test_forgetting_and_sequential_tables(tmp_path: Path, results: Path) -> None:
    assert forgetting_tables(load_results([results])) == []  # nothing to show: skipped, no error
    tables = forgetting_tables(load_results([extra_runs(tmp_path / "x")]))
    retention = _table(tables, "forgetting")
    lora, losia = (next(r for r in retention.rows if r.keys[1].startswith(m)) for m in ("lora", "losia"))
    assert lora.cells["arc_e"].mean == pytest.approx(5.0) and losia.cells["Mean"].mark == "untested"  # one run each
    seq = _table(tables, "sequential")
    lora, losia = (next(r for r in seq.rows if r.keys[1].startswith(m)) for m in ("lora", "losia"))
    assert lora.cells["final_avg_acc"].mean == pytest.approx(60.0)  # (0.5 + 0.6 + 0.7) / 3
    assert lora.cells["bwt"].mean == pytest.approx(-15.0)  # ((0.5 - 0.7) + (0.6 - 0.7)) / 2
    assert losia.cells["bwt"].mark == "untested" and losia.cells["forgetting_mean"].mean == pytest.approx(4.5)
    matrix = _table(tables, "sequential_matrix")
    assert matrix.columns == ["boolq", "piqa", "arc_e"]  # training order, not alphabetical
    lora_rows = [r for r in matrix.rows if r.keys[1].startswith("lora")]
    assert [r.keys[2] for r in lora_rows] == ["stage-1", "stage-2", "stage-3"]
    assert [lora_rows[2].cells[t].mean for t in ("boolq", "piqa", "arc_e")] == pytest.approx([50.0, 60.0, 70.0])
    assert lora_rows[0].cells["piqa"].mean == pytest.approx(50.0)  # not trained yet


def test_recorded_bwt_wins(tmp_path: Path) -> None:
    evals = [_ev("boolq", "stage-1", 0.7), _ev("boolq", "stage-2", 0.6), _ev("piqa", "stage-2", 0.7),
             {**_ev("boolq+piqa", "stage-2", 0.0), "metrics": [{"name": "bwt", "value": -0.2}]}]
    make_run(tmp_path / "r", "lora", 0, {}, train_tasks=["boolq", "piqa"], extra_evals=evals)
    seq = _table(forgetting_tables(load_results([tmp_path / "r"])), "sequential")
    assert seq.rows[0].cells["bwt"].mean == pytest.approx(-20.0)


def test_ranks_table(tmp_path: Path) -> None:
    table = ranks_tables(load_results([extra_runs(tmp_path / "x")]))[0]
    assert table.columns == ["q_proj", "v_proj", "lm_head"]
    assert [r.keys[0] for r in table.rows] == ["0", "1", "2", "-"]
    assert table.cell_text(table.rows[2], "v_proj") == "10" and "total rank 50" in table.notes[0]


def test_custom_table_any_metric_by_any_grouping(results: Path) -> None:
    res = load_results([results])
    by_seed = custom_table(res, ["method"], "seed", "acc", "after")
    assert by_seed.key_names == ["Method"] and by_seed.columns == ["0", "1"]
    assert by_seed.cell_text(_row_by(by_seed, "lora"), "1") == "60.7 ± 12.1 ≈"  # the three tasks of seed 1
    assert any("pooled across task" in n for n in by_seed.notes)
    steps = custom_table(res, ["method"], "device", "step_time_s", None)
    assert steps.cell_text(_row_by(steps, "losia"), "cpu: Test CPU") == "0.4 ± 0"
    with pytest.raises(ReportError, match="no values for metric"):
        custom_table(res, ["method"], "task", "nope", None)


def _row_by(table, method: str):
    return next(r for r in table.rows if r.keys[0] == method)


def test_latex_and_csv(results: Path) -> None:
    table = _table(accuracy_tables(load_results([results])), "commonsense")
    tex = render.to_latex(table)
    assert r"\toprule" in tex and r"\bottomrule" in tex and r"75.0 $\pm$ 1.4 $\approx$" in tex
    assert "\\\\\n & losia" in tex  # the model is printed once per group
    rows = list(csv.reader(io.StringIO(render.to_csv(table))))
    assert rows[0][:6] == ["Model", "Method", "reference", "BoolQ", "BoolQ std", "BoolQ n"]
    lora = next(r for r in rows if r[1] == "lora")
    assert float(lora[3]) == pytest.approx(71.0) and lora[5] == "2"


def test_duplicate_runs_across_folders_are_counted_once(results: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(results, copy)
    res = load_results([results, copy])
    assert sum("found twice" in n for n in res.notes) == 6
    table = _table(accuracy_tables(res), "commonsense")
    assert _row(table, "lora").cells["boolq"].n == 2


def test_pareto_front() -> None:
    points = [(1.0, 50.0), (2.0, 60.0), (2.5, 55.0), (3.0, 70.0), (0.5, 40.0)]
    assert sorted(pareto_front(points)) == [0, 1, 3, 4]


def test_commands_recorded_or_reconstructed(results: Path) -> None:
    cmds = commands(list(load_results([results]).runs.values()))
    recorded = [c for c in cmds if c.recorded]
    assert [c.text for c in recorded] == ["bench run --methods lora,losia --tasks boolq,piqa,arc_e --seeds 0,1"]
    rebuilt = next(c for c in cmds if not c.recorded and "lora" in c.text)
    assert "--seeds 0,1" in rebuilt.text and "--set lr=0.0002" in rebuilt.text and "--max-steps 20" in rebuilt.text


# -- the whole report ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("runs")
    standard_runs(root / "a")
    extra_runs(root / "b")
    out = root / "report"
    parser = argparse.ArgumentParser(prog="bench")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["report", str(root / "a"), str(root / "b"), "--out", str(out)])
    assert args.func(args) == 0
    return out, (out / "index.html").read_text()


def test_report_files(built: tuple[Path, str]) -> None:
    out, _ = built
    for name in ("commonsense", "efficiency", "forgetting", "sequential"):
        for ext in ("md", "tex", "csv"):
            assert (out / "tables" / f"{name}.{ext}").stat().st_size > 0
    names = {p.stem for p in (out / "plots").glob("*.png")}
    assert names == {"accuracy-commonsense", "pareto-step-commonsense", "pareto-peak-commonsense",
                     "memory-breakdown", "loss-curves", "forgetting-heatmap", "sequential-accuracy",
                     "rank-allocation", "losia-reselections"}
    for png in (out / "plots").glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
        assert png.with_suffix(".svg").read_text().lstrip().startswith("<?xml")


def test_html_is_self_contained(built: tuple[Path, str]) -> None:
    out, page = built
    assert page.count('src="data:image/png;base64,') == len(list((out / "plots").glob("*.png")))
    first = page.split('src="data:image/png;base64,')[1].split('"')[0]
    assert base64.b64decode(first)[:4] == b"\x89PNG"
    assert "http://" not in page and "https://" not in page  # nothing fetched from elsewhere
    assert "Commonsense reasoning: acc after training (%)" in page and "75.0 ± 1.4 ≈" in page
    assert "Not mixed into this table" in page and "protocol=generation" in page
    assert "bench run --methods lora,losia --tasks boolq,piqa,arc_e --seeds 0,1" in page
    assert "abc1234def" in page and "Test CPU" in page and "CUDA out of memory" in page


def test_table_command_prints_main_table(results: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench")
    add_parsers(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["table", str(results)])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("Commonsense reasoning") and "75.0 ± 1.4 ≈" in printed and "dropped" in printed
    args = parser.parse_args(["table", str(results / "nothing")])
    assert args.func(args) == 2


@pytest.mark.skipif(not shutil.which("chromium"), reason="no chromium browser installed")
def test_html_renders_in_headless_browser(built: tuple[Path, str], tmp_path: Path) -> None:
    out, _ = built
    shot = tmp_path / "shot.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--no-first-run",
                    f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1400,3000",
                    (out / "index.html").resolve().as_uri()], capture_output=True, timeout=120, check=True)
    assert shot.read_bytes()[:4] == b"\x89PNG" and shot.stat().st_size > 50_000  # a blank page is a few KB
