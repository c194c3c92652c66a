"""Fault injection (issue #16): every bad value, damaged record, full disk, kill and race that once
lost a result or ended in a traceback. Each case asserts what a user sees (one line, no traceback,
exit 2 for bad input) and what survives (finished runs, readable tables, a rerun that resumes).

Everything runs on tiny-llama and the file-free synthetic task; the cases that need a second
process start ``bench`` or Python as a subprocess; full and read-only disks are small tmpfs
mounts, skipped where mounting is not allowed (not root, or a container without the right).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from harness import cli, records

ROOT = Path(__file__).resolve().parents[1]
BENCH = [sys.executable, "-m", "harness.cli"]
FAST = ["--model", "tiny-llama", "--tasks", "synthetic", "--max-steps", "2", "--eval-limit", "4",
        "--no-progress", "--set", "eval_batch_size=4", "--retention", "none"]
RUN = ["run", *FAST, "--executor", "inline"]
HAS_DATA = (ROOT.parent / "shared" / "data").is_dir() or bool(os.environ.get("PEFT_BENCH_DATA"))


def bench(capsys, *argv: str) -> tuple[int, str, str]:
    """``bench ARGV`` in this process: (exit code, stdout, stderr). An exception escaping main
    is a traceback a user would see, so it fails the test here."""
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *needles: str) -> str:
    """Exit 2 and exactly one ``bench: error:`` line containing every needle, no traceback."""
    lines = [line for line in err.splitlines() if line.startswith("bench: error:")]
    assert code == 2, err
    assert len(lines) == 1, err
    assert "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def warnings_about(err: str, path: Path | str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("bench: warning:") and str(path) in line]


def run_records(out: Path) -> dict[str, dict]:
    """method -> run.json of every readable run folder under ``out``."""
    found = {}
    for path in sorted((Path(out) / "runs").glob("*/run.json")):
        try:
            rec = json.loads(path.read_text())
            found[rec["config"]["method"]] = rec
        except (ValueError, KeyError, TypeError):
            continue
    return found


def assert_tables_agree(out: Path) -> None:
    """results.csv and results.parquet hold the same rows, and no temporary file is left over."""
    csv, parquet = pd.read_csv(out / "results.csv"), pd.read_parquet(out / "results.parquet")
    key = ["run_id", "task", "phase", "metric"]
    assert sorted(map(tuple, csv[key].astype(str).values)) == sorted(map(tuple, parquet[key].astype(str).values))
    assert not [p.name for p in out.glob(".results.*")], "stray temporary table files"


# -- one finished grid, copied into each test that damages it -------------------------------

@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """lora and full, finished, with their tables (trained once for the whole module)."""
    out = tmp_path_factory.mktemp("finished")
    assert cli.main([*RUN, "--methods", "lora,full", "--out", str(out)]) == 0
    return out


@pytest.fixture
def grid(finished, tmp_path) -> Path:
    out = tmp_path / "grid"
    shutil.copytree(finished, out)
    return out


def run_json(out: Path, method: str) -> Path:
    return Path(out) / "runs" / run_records(out)[method]["run_id"] / "run.json"


# -- bad values: refused before anything runs, one line each ---------------------------------

BAD_RUN_VALUES = [
    # trained wrongly and recorded ok before
    (["--set", "grad_clip=-1"], ["grad_clip", "-1"]),
    (["--set", "precision=fp8"], ["precision", "fp8", "bf16"]),
    (["--set", "precision=BF16"], ["precision", "BF16"]),
    (["--set", "precision=bfloat16"], ["precision", "bfloat16"]),
    (["--set", "eval_limit=-3"], ["eval_limit", "-3"]),
    (["--eval-limit", "-3"], ["eval_limit", "-3"]),
    (["--set", "peft:LoRA.r=64"], ["peft:LoRA"]),
    (["--set", "peft:vera.r=64"], ["peft:vera", "not a method in this run"]),
    # failed inside the worker before
    (["--set", "lr=-1"], ["lr", "-1"]),
    (["--set", "lr=NaN"], ["lr", "NaN"]),
    (["--set", "lr=true"], ["lr", "true"]),
    (["--set", "batch_size=0"], ["batch_size", "0"]),
    (["--set", "max_length=0"], ["max_length", "0"]),
    (["--set", "lora.r=0"], ["r", "0"]),
    (["--set", "lora.r=-2"], ["r", "-2"]),
    (["--set", "lora.r=1.5"], ["r", "1.5"]),
    (["--set", "micro_batch_size=3"], ["micro_batch_size", "3", "batch_size"]),
    (["--set", "max_steps=-5"], ["max_steps", "-5"]),
    (["--max-steps", "-5"], ["max_steps", "-5"]),
    # tracebacks before
    (["--methods", "peft:nosuch"], ["peft:nosuch"]),
    (["--methods", ","], ["--methods"]),
    (["--seeds", "a"], ["--seeds", "a"]),
    (["--seeds", "1e3"], ["--seeds", "1e3"]),
]


@pytest.mark.parametrize("extra, needles", BAD_RUN_VALUES, ids=[" ".join(a) for a, _ in BAD_RUN_VALUES])
def test_bad_run_values_are_one_line_before_anything_runs(tmp_path, capsys, extra, needles):
    argv = [*RUN, "--methods", "lora", "--out", tmp_path]
    if extra[0] == "--methods":
        argv[argv.index("--methods") + 1] = extra[1]
        extra = []
    code, _, err = bench(capsys, *argv, *extra)
    assert_one_line_error(code, err, *needles)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("setting, needles", [("num_beams=0", ["num_beams", "0"]), ("eval_limit=-1", ["eval_limit"]),
                                              ("max_new_tokens=-1", ["max_new_tokens"]), ("lr=1", ["lr", "valid"])])
def test_bad_eval_values_are_one_line(tmp_path, capsys, setting, needles):
    code, _, err = bench(capsys, "eval", "--model", "tiny-llama", "--tasks", "synthetic", "--set", setting,
                         "--no-progress", "--out", tmp_path)
    assert_one_line_error(code, err, *needles)
    assert not (tmp_path / "runs").exists()


def test_unknown_peft_tuner_lists_the_valid_ones(tmp_path, capsys):
    code, _, err = bench(capsys, *RUN, "--methods", "peft:nosuch", "--out", tmp_path)
    line = assert_one_line_error(code, err, "peft:nosuch")
    assert "lora" in line.lower() and "vera" in line.lower()


def test_out_that_is_a_file_is_one_line(tmp_path, capsys):
    target = tmp_path / "taken"
    target.write_text("not a folder")
    code, _, err = bench(capsys, *RUN, "--methods", "lora", "--out", target)
    assert_one_line_error(code, err, str(target), "file")
    assert target.read_text() == "not a folder"


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_one_line(tmp_path, capsys):
    code, _, err = bench(capsys, *RUN, "--methods", "lora", "--device", "cuda", "--out", tmp_path)
    assert_one_line_error(code, err, "cuda")
    assert not (tmp_path / "runs").exists()


def test_symlink_loop_task_file_is_one_line(tmp_path, capsys):
    loop = tmp_path / "loop.json"
    loop.symlink_to(loop)
    code, _, err = bench(capsys, *RUN, "--methods", "lora", "--tasks", f"file:{loop}", "--out", tmp_path / "o")
    assert_one_line_error(code, err, str(loop))


@pytest.mark.slow  # lm-eval indexes its thousands of task files first: about a minute
def test_lm_eval_task_offline_is_one_line(tmp_path):
    # a fresh process, as a user runs it: the hub library reads its offline switch once, at import
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "harness.cli", "eval", "--model", "tiny-llama", "--tasks",
                           "lm-eval:piqa", "--eval-limit", "2", "--no-progress", "--out", str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=600)
    code, err = done.returncode, done.stderr
    assert_one_line_error(code, err, "lm-eval:piqa")
    assert len(err.strip().splitlines()) <= 3, err  # no pages of hub retries


def test_synth_zero_blocks_is_one_line(tmp_path, capsys):
    code, _, err = bench(capsys, "synth", "--blocks", "0", "--out", tmp_path)
    assert_one_line_error(code, err, "--blocks")


SWEEP = """
model: tiny-llama
methods: {lora: {lr: [1e-3]}}
tasks: [synthetic]
seeds: [0]
retention: none
budget: {max_steps: 2, eval_limit: 4}
"""

BAD_SWEEPS = [
    ("methods: {lora: [1, 2]}", ["lora"]),
    ("seeds: [a, b]", ["seeds"]),
    ('budget: "max_steps=5"', ["budget"]),
    ("methods: {lora: {lr: [-1]}}", ["lr", "-1"]),
    ("methods: {lora: {lora.r: [0, 4]}}", ["r", "0"]),
    ("budget: {max_steps: 2, eval_limit: -3}", ["eval_limit", "-3"]),
]


@pytest.mark.parametrize("line, needles", BAD_SWEEPS, ids=[line for line, _ in BAD_SWEEPS])
def test_bad_sweep_values_are_one_line(tmp_path, capsys, line, needles):
    key = line.split(":", 1)[0]
    text = "\n".join(x for x in SWEEP.strip().splitlines() if not x.startswith(key + ":")) + "\n" + line + "\n"
    path = tmp_path / "s.yaml"
    path.write_text(text)
    for extra in (["--dry-run"], ["--executor", "inline"]):
        code, _, err = bench(capsys, "sweep", path, "--out", tmp_path / "o", *extra)
        assert_one_line_error(code, err, *needles)
    assert not (tmp_path / "o" / "runs").exists()


def test_huge_dry_run_is_refused_quickly_with_its_size(tmp_path, capsys):
    lrs = ", ".join(f"{1e-5 * (i + 1):.6g}" for i in range(1000))
    path = tmp_path / "huge.yaml"
    path.write_text(SWEEP.replace("lr: [1e-3]", f"lr: [{lrs}]").replace("seeds: [0]", f"seeds: [{', '.join(map(str, range(1000)))}]"))
    start = time.monotonic()
    code, _, err = bench(capsys, "sweep", path, "--dry-run", "--out", tmp_path / "o")
    assert time.monotonic() - start < 20
    assert_one_line_error(code, err, "1,000,000")


BAD_BASELINES = {
    "truncated": lambda good: good[: len(good) // 2],
    "foreign": lambda good: json.dumps({"run_id": "x", "status": "ok", "config": {}}),
    "a list": lambda good: "[1, 2]",
    "incomplete": lambda good: json.dumps({k: v for k, v in json.loads(good).items() if k != "machines"}),
    "not utf-8": lambda good: b"\xff\xfe{".decode("latin-1"),
}


@pytest.mark.parametrize("damage", list(BAD_BASELINES))
def test_damaged_perf_baseline_is_one_line_before_measuring(tmp_path, capsys, monkeypatch, damage):
    good = next(ROOT.glob("results/baselines/cpu-tiny*.json")).read_text()
    path = tmp_path / "baseline.json"
    path.write_bytes(BAD_BASELINES[damage](good).encode("latin-1" if damage == "not utf-8" else "utf-8"))
    start = time.monotonic()
    code, _, err = bench(capsys, "perf", "--check", path, "--no-progress")
    assert_one_line_error(code, err, str(path))
    assert time.monotonic() - start < 30  # refused before a measurement, not after it


# -- damaged records: reported in one line, never stop a later command -----------------------

DAMAGE = {
    "truncated": lambda b: b[: len(b) // 3],
    "not utf-8": lambda b: b"\xff\xfe" + b[2:],
    "a list": lambda b: b"[]",
    "no config": lambda b: json.dumps({"run_id": "x", "status": "ok"}).encode(),
    "empty": lambda b: b"",
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_table_and_report_skip_a_damaged_run_json_with_a_note(grid, tmp_path, capsys, damage):
    path = run_json(grid, "lora")
    path.write_bytes(DAMAGE[damage](path.read_bytes()))
    code, out, err = bench(capsys, "table", grid)
    assert code == 0 and "Traceback" not in err
    assert warnings_about(err + out, path) or str(path) in out
    if damage in ("truncated", "a list"):  # a report takes seconds (plots): two kinds of damage suffice
        code, out, err = bench(capsys, "report", grid, "--out", tmp_path / "report")
        assert code == 0 and "Traceback" not in err
        assert (tmp_path / "report").is_dir()


@pytest.mark.parametrize("damage", ["truncated", "a list"])  # not UTF-8: the --force/sweep case below
def test_run_reruns_a_damaged_run_and_keeps_the_rest(grid, capsys, damage):
    lora, full = run_json(grid, "lora"), run_json(grid, "full")
    intact = full.read_bytes()
    lora.write_bytes(DAMAGE[damage](lora.read_bytes()))
    code, out, err = bench(capsys, *RUN, "--methods", "lora,full", "--out", grid)
    assert code == 0 and "Traceback" not in err, err
    assert len(warnings_about(err, lora)) == 1
    assert json.loads(lora.read_text())["status"] == "ok"  # done again
    assert full.read_bytes() == intact and "already done, skipped" in out
    assert_tables_agree(grid)


def test_force_and_sweep_get_past_a_damaged_run_json(grid, tmp_path, capsys):
    lora = run_json(grid, "lora")
    lora.write_bytes(DAMAGE["not utf-8"](lora.read_bytes()))
    code, _, err = bench(capsys, *RUN, "--methods", "full", "--out", grid, "--force")
    assert code == 0 and "Traceback" not in err, err
    path = tmp_path / "s.yaml"
    path.write_text(SWEEP.replace("lora: {lr: [1e-3]}", "full: {}"))
    lora.write_bytes(b"{")
    for extra in (["--dry-run"], ["--executor", "inline", "--no-progress"]):
        code, _, err = bench(capsys, "sweep", path, "--out", grid, *extra)
        assert code == 0 and "Traceback" not in err, err


def test_truncated_steps_and_samples_do_not_stop_report_or_compare(grid, tmp_path, capsys):
    folder = run_json(grid, "lora").parent
    steps = folder / "steps.jsonl"
    steps.write_bytes(steps.read_bytes()[:-7])
    sample = next((folder / "samples" / "after").glob("*.jsonl"))
    sample.write_bytes(sample.read_bytes()[:-5] + b"\xff")
    code, out, report_err = bench(capsys, "report", grid, "--out", tmp_path / "report")
    assert code == 0 and "Traceback" not in report_err, report_err
    assert warnings_about(report_err, steps)
    code, out, err = bench(capsys, "compare", grid, "--methods", "lora,full")
    assert code == 0 and "Traceback" not in err, err
    # a file is reported once per process: the report (which reads samples for its intervals) or compare
    assert warnings_about(report_err + err, sample)
    assert "synthetic" in out


def test_stray_temp_files_and_disagreeing_tables_are_repaired(grid, capsys):
    """What a kill between the csv and the parquet write leaves: both are rebuilt, temps removed."""
    (grid / ".results.parquet.k1ll3d").write_bytes(b"PAR1 half")
    (grid / ".results.csv.k1ll3d").write_text("run_id\n")
    pd.read_csv(grid / "results.csv").head(1).to_csv(grid / "results.csv", index=False)
    code, _, err = bench(capsys, *RUN, "--methods", "lora,full", "--out", grid)
    assert code == 0, err
    assert_tables_agree(grid)
    assert len(pd.read_csv(grid / "results.csv")) > 1


# -- sequence checkpoints: a damaged or planted one is discarded, the run completes ----------

@pytest.fixture(scope="module")
def interrupted_sequence(tmp_path_factory) -> Path:
    """A two-stage sequence stopped after stage 1: its run.json and checkpoint.pt."""
    if not HAS_DATA:
        pytest.skip("needs ../shared/data (arc_e)")
    from harness import driver

    out = tmp_path_factory.mktemp("sequence")
    real, calls = driver.train, []

    def train_then_stop(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    driver.train = train_then_stop
    try:
        code = cli.main(["run", *[a for a in FAST if a not in ("--tasks", "synthetic")], "--sequence",
                         "synthetic,arc_e", "--methods", "lora", "--executor", "inline", "--out", str(out)])
    finally:
        driver.train = real
    assert code == 130
    assert next(out.glob("runs/*/checkpoint.pt"))
    return out


def _sequence_rerun(capsys, out: Path) -> tuple[int, str, dict]:
    code, _, err = bench(capsys, "run", *[a for a in FAST if a not in ("--tasks", "synthetic")], "--sequence",
                         "synthetic,arc_e", "--methods", "lora", "--executor", "inline", "--out", out)
    return code, err, json.loads(next(out.glob("runs/*/run.json")).read_text())


@pytest.mark.needs_data  # the sequence's second stage is arc_e
def test_damaged_checkpoint_is_discarded_and_the_run_completes(interrupted_sequence, tmp_path, capsys):
    out = tmp_path / "seq"
    shutil.copytree(interrupted_sequence, out)
    ckpt = next(out.glob("runs/*/checkpoint.pt"))
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    code, err, rec = _sequence_rerun(capsys, out)
    assert code == 0 and "Traceback" not in err, err
    assert len(warnings_about(err, ckpt)) == 1
    assert rec["status"] == "ok" and len(rec["stages"]) == 2 and "resumed_after_stage" not in rec


@pytest.mark.needs_data  # the sequence's second stage is arc_e
def test_planted_pickle_checkpoint_runs_no_code(interrupted_sequence, tmp_path, capsys):
    import torch

    out = tmp_path / "seq"
    shutil.copytree(interrupted_sequence, out)
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    ckpt = next(out.glob("runs/*/checkpoint.pt"))
    torch.save({"x": Payload()}, ckpt)
    code, err, rec = _sequence_rerun(capsys, out)
    assert not marker.exists()
    assert code == 0 and rec["status"] == "ok", err
    assert warnings_about(err, ckpt)


@pytest.mark.needs_data  # the sequence's second stage is arc_e
def test_intact_checkpoint_resumes_after_the_finished_stage(interrupted_sequence, tmp_path, capsys):
    out = tmp_path / "seq"
    shutil.copytree(interrupted_sequence, out)
    code, err, rec = _sequence_rerun(capsys, out)
    assert code == 0 and rec["status"] == "ok" and rec["resumed_after_stage"] == 1, err


# -- full and read-only disks (small tmpfs mounts; root only) --------------------------------

@pytest.fixture
def tmpfs(tmp_path):
    """Mount a tmpfs of the given size (and options) under tmp_path; skip where not allowed."""
    mounted: list[Path] = []

    def mount(size: str, options: str = "") -> Path:
        if os.geteuid() != 0 or not shutil.which("mount"):
            pytest.skip("mounting a tmpfs needs root")
        point = tmp_path / f"mnt{len(mounted)}"
        point.mkdir()
        opts = f"size={size}" + (f",{options}" if options else "")
        if subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(point)], capture_output=True).returncode:
            pytest.skip("mounting a tmpfs is not allowed here")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


def _fill(folder: Path, leave: int) -> Path:
    """Fill the filesystem of ``folder`` up to ``leave`` free bytes with a ballast file."""
    ballast = folder / "ballast"
    free = shutil.disk_usage(folder).free - leave
    with open(ballast, "wb") as fh:
        while free > 0:
            n = min(free, 1 << 20)
            try:
                fh.write(b"\0" * n)
                fh.flush()
            except OSError:
                break
            free -= n
    return ballast


@pytest.mark.parametrize("leave", [40_000, 0])
def test_disk_full_is_one_line_and_keeps_finished_runs(finished, tmpfs, capsys, leave):
    disk = tmpfs("8m")
    out = disk / "out"
    shutil.copytree(finished, out)
    lora = run_json(out, "lora")
    before = lora.read_bytes()
    ballast = _fill(disk, leave)
    code, _, err = bench(capsys, *RUN, "--methods", "lora,full,dora", "--out", out)
    assert code != 0 and "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("bench: error:")]
    assert len(lines) == 1 and "disk" in lines[0], err
    assert lora.read_bytes() == before
    assert_tables_agree(out)
    assert not [p for p in out.rglob(".*") if p.is_file() and not p.name.endswith("lock")]
    ballast.unlink()
    code, _, err = bench(capsys, *RUN, "--methods", "lora,full,dora", "--out", out)  # room again: resumes
    assert code == 0, err
    assert {m: r["status"] for m, r in run_records(out).items()} == {"lora": "ok", "full": "ok", "dora": "ok"}
    assert_tables_agree(out)


def test_read_only_out_is_one_line(finished, tmpfs, capsys):
    disk = tmpfs("8m")
    shutil.copytree(finished, disk / "out")
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
    code, _, err = bench(capsys, *RUN, "--methods", "lora,dora", "--out", disk / "out")
    assert_one_line_error(code, err, "read-only")
    code, out, err = bench(capsys, "table", disk / "out")  # reading still works
    assert code == 0 and "lora" in out, err


# -- concurrency ------------------------------------------------------------------------------

CONVERT = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from harness import models

    class Slow:
        def save_pretrained(self, folder):
            time.sleep(1.0)
            Path(folder, "config.json").write_text("{}")

    def fake():
        with open(sys.argv[1], "a") as fh:
            fh.write("converted\\n")
        return Slow(), Slow()

    models._dequantised = fake
    print(models.smollm2_dir())
""")


def test_two_processes_converting_the_model_cache_both_succeed(tmp_path):
    env = {**os.environ, "PEFT_BENCH_CACHE": str(tmp_path / "cache")}
    log = tmp_path / "conversions"
    procs = [subprocess.Popen([sys.executable, "-c", CONVERT, str(log)], env=env, cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    assert results[0][0].strip().splitlines()[-1] == results[1][0].strip().splitlines()[-1]
    assert log.read_text().count("converted") == 1  # the loser waited and reused the folder
    assert [p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")] == \
        ["smollm2-135m-instruct-q4_1-fp32"]


@pytest.mark.slow  # two bench processes, each importing torch and training: a minute or two
def test_two_runs_on_one_out_do_each_run_once(tmp_path):
    argv = [*BENCH, *RUN, "--methods", "lora,full", "--out", str(tmp_path)]
    procs = [subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    outs = "".join(out for out, _ in results)
    assert outs.count("skipped") == 2, outs  # each run done by one process, skipped by the other
    assert {m: r["status"] for m, r in run_records(tmp_path).items()} == {"lora": "ok", "full": "ok"}
    assert_tables_agree(tmp_path)


# -- kills ------------------------------------------------------------------------------------

def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@pytest.mark.slow  # a fork server and a worker process: over a minute on a loaded 2-core machine
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_killed_bench_leaves_no_orphans_and_a_rerun_completes(tmp_path, capsys):
    argv = [*BENCH, "run", *FAST, "--methods", "lora", "--max-steps", "200", "--executor", "local",
            "--out", str(tmp_path)]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, family = time.monotonic() + 180, set()
    while time.monotonic() < deadline and not list(tmp_path.glob("runs/*/run.json")):
        family |= _descendants(proc.pid)
        time.sleep(0.2)
    family |= _descendants(proc.pid)
    assert list(tmp_path.glob("runs/*/run.json")), "the worker never started"
    assert len(family) >= 2  # the fork server and the worker
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(_alive(p) for p in family):
        time.sleep(0.2)
    assert not [p for p in family if _alive(p)], "orphans left running"
    code, _, err = bench(capsys, *RUN, "--methods", "lora", "--out", tmp_path)  # the interrupted run again
    assert code == 0, err
    assert run_records(tmp_path)["lora"]["status"] == "ok"


# -- a fresh machine: data found or fetched, else one line naming every place tried ----------

def test_missing_data_names_every_place_tried(tmp_path, capsys, monkeypatch):
    from tasks import sources

    monkeypatch.setattr(sources, "DEFAULT_DATA_DIR", tmp_path / "shared-data")  # as on a fresh machine
    monkeypatch.setenv("PEFT_BENCH_DATA", str(tmp_path / "given"))  # what --data-dir sets; undone afterwards
    monkeypatch.setenv("PEFT_BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PEFT_BENCH_OFFLINE", "1")
    (tmp_path / "given").mkdir()  # a folder the user gave that lacks the file (a missing folder is its own error)
    code, _, err = bench(capsys, *RUN, "--methods", "lora", "--tasks", "arc_e", "--data-dir", tmp_path / "given",
                         "--out", tmp_path / "o")
    line = assert_one_line_error(code, err, "arc_e")
    for place in ("given", "shared-data", "cache", "download", "--data-dir"):
        assert place in line, line


def test_data_found_only_upstream_is_downloaded_into_the_cache(upstream, tmp_path, monkeypatch):
    """A fresh machine with internet: the file comes by itself, verified, and is reused."""
    import hashlib

    from tasks import sources

    (upstream / "dataset" / "x").mkdir(parents=True)
    (upstream / "dataset" / "x" / "test.json").write_text("[1]")
    rel = "llm-adapters/dataset/x/test.json"
    pin = hashlib.sha256(b"[1]").hexdigest()
    monkeypatch.setattr(sources, "DEFAULT_DATA_DIR", tmp_path / "shared-data")
    monkeypatch.delenv("PEFT_BENCH_DATA", raising=False)
    path, tried = sources.current(tmp_path / "given").find(rel, pin)
    assert path.is_relative_to(tmp_path / "cache") and sources.sha256(path) == pin
    assert "--data-dir" in tried[0] and "shared-data" in tried[1]
    (upstream / "dataset" / "x" / "test.json").unlink()  # offline from now on: the cached copy serves
    assert sources.current(tmp_path / "given").find(rel, pin)[0] == path


@pytest.fixture
def upstream(tmp_path, monkeypatch):
    """A local HTTP server standing in for the data's upstream repositories."""
    import functools
    import http.server
    import threading

    from tasks import download

    root = tmp_path / "upstream"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setitem(download.SOURCES, "llm-adapters/", f"http://127.0.0.1:{server.server_port}/")
    monkeypatch.setenv("PEFT_BENCH_CACHE", str(tmp_path / "cache"))
    for key in download.OFFLINE_ENVS:
        monkeypatch.delenv(key, raising=False)
    yield root
    server.shutdown()


def test_download_is_checksummed_into_the_cache(upstream, tmp_path):
    import hashlib

    from tasks import download

    (upstream / "dataset" / "x").mkdir(parents=True)
    (upstream / "dataset" / "x" / "test.json").write_text("[1, 2, 3]")
    good = hashlib.sha256(b"[1, 2, 3]").hexdigest()
    path = download.fetch("llm-adapters/dataset/x/test.json", good, progress=False)
    assert path.read_text() == "[1, 2, 3]" and path.is_relative_to(tmp_path / "cache")
    path.unlink()
    with pytest.raises(download.DownloadError, match="not the pinned"):
        download.fetch("llm-adapters/dataset/x/test.json", "0" * 64, progress=False)
    assert not [p for p in path.parent.iterdir() if not p.name.endswith(".lock")]  # nothing wrong kept
    with pytest.raises(download.DownloadError, match="could not download"):
        download.fetch("llm-adapters/dataset/nosuch/test.json", good, progress=False)


def test_a_data_dir_that_does_not_exist_is_one_line(tmp_path, capsys):
    code, _, err = bench(capsys, "run", "--methods", "lora", "--tasks", "arc_e", "--model", "tiny-llama",
                         "--data-dir", tmp_path / "nosuch", "--out", tmp_path / "out")
    assert_one_line_error(code, err, "--data-dir", "no such folder")
    assert not (tmp_path / "out").exists()
