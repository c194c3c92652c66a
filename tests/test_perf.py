"""bench perf and --check: figures, the regression gate, and its tolerance rule."""
from __future__ import annotations

import copy
import json

import pytest
import torch

from harness import cli, perfcheck
from harness.perf import PerfConfig, measure

CFG = dict(shape="tiny", methods=("lora",), batch_size=4, seq_len=64, rounds=9, steps_per_round=4, warmup_steps=2)


@pytest.fixture(scope="module")
def baseline():
    return measure(PerfConfig(**CFG), progress=False)


def test_perf_reports_ratios_and_memory(baseline):
    rows = baseline["methods"]
    assert set(rows) == {"floor", "lora"}
    assert rows["floor"]["ratio_to_floor"] == 1.0 and rows["floor"]["trainable_params"] == 0
    lora = rows["lora"]
    assert lora["ratio_to_floor"] > 0.5 and lora["ratio_to_lora"] == 1.0
    assert lora["trainable_params"] == 65536  # r=32 on every projection of the 2-layer tiny model
    assert lora["activation_bytes"] > rows["floor"]["activation_bytes"] > 0
    assert lora["optimizer_state_bytes"] == 2 * 4 * 65536 + 4 * 28  # exp_avg, exp_avg_sq + 28 step scalars
    assert lora["flops_per_step"] > rows["floor"]["flops_per_step"]


def test_perf_header_states_the_machine_load(baseline):
    from harness.perf import format_table

    assert {"start", "end", "cpu_count", "cores_used"} <= set(baseline["load"])
    busy = {**baseline, "load": {**baseline["load"], "cpu_count": 2, "start": {"load1": 9.0}, "end": {"load1": 1.0}}}
    quiet = {**baseline, "load": {**busy["load"], "start": {"load1": 1.0}}}
    assert format_table(busy).splitlines()[1].startswith("BUSY MACHINE: load 9 -> 1 (1-min average")
    assert format_table(quiet).splitlines()[1].startswith("load 1 -> 1")


def test_unmodified_code_passes_its_own_baseline(baseline):
    again = measure(PerfConfig(**CFG), progress=False)
    findings, _ = perfcheck.compare(baseline, again)
    assert findings and not [f for f in findings if f.regressed], perfcheck.markdown(findings, [], "baseline")


def test_an_injected_slowdown_fails_the_check(baseline, monkeypatch):
    from methods.peft_tuners import PeftAdapted

    a = torch.randn(768, 768)

    def slow_after_step(self, step):  # an extra matmul chain in every LoRA step (several x its step time)
        for _ in range(36):
            a @ a

    monkeypatch.setattr(PeftAdapted, "after_step", slow_after_step)
    slowed = measure(PerfConfig(**CFG), progress=False)
    findings, _ = perfcheck.compare(baseline, slowed)
    bad = [f for f in findings if f.regressed]
    assert [f.figure for f in bad if f.method == "lora"][:1] == ["ratio_to_floor"], perfcheck.markdown(findings, [], "b")


def test_tolerance_rule_and_deterministic_figures():
    base = {"config": {"shape": "tiny", "batch_size": 4, "seq_len": 64}, "device": {"name": "A"},
            "methods": {"m": {"ratio_to_floor": 1.0, "ratio_to_floor_spread": 0.01, "activation_bytes": 100,
                              "step_time_s": 1.0, "step_time_p10_s": 0.9, "step_time_p90_s": 1.1}}}
    new = copy.deepcopy(base)
    new["device"]["name"] = "B"
    new["methods"]["m"]["ratio_to_floor"] = 1.049  # within the 5% floor
    findings, notes = perfcheck.compare(base, new)
    assert not any(f.regressed for f in findings) and any("not gated" in n for n in notes)
    new["methods"]["m"]["ratio_to_floor"] = 1.06
    assert any(f.regressed for f in perfcheck.compare(base, new)[0])
    new["methods"]["m"]["ratio_to_floor_spread"] = 0.03  # noisier now: tolerance 3 x 2.8% = 8.5%
    assert not any(f.regressed for f in perfcheck.compare(base, new)[0])
    new["methods"]["m"]["ratio_to_floor_spread"], new["methods"]["m"]["ratio_to_floor"] = 0.8, 1.6
    assert any(f.regressed for f in perfcheck.compare(base, new)[0])  # noise widens the limit at most to +50%
    new["methods"]["m"]["ratio_to_floor_spread"], new["methods"]["m"]["ratio_to_floor"] = 0.03, 1.06
    new["methods"]["m"]["activation_bytes"] = 120  # deterministic figure grew
    assert [f.figure for f in perfcheck.compare(base, new)[0] if f.regressed] == ["activation_bytes"]
    other = copy.deepcopy(base)
    other["config"]["seq_len"] = 128
    with pytest.raises(ValueError, match="another setup"):
        perfcheck.compare(base, other)


def test_cli_check_update_and_summary(tmp_path, monkeypatch):
    path = tmp_path / "base.json"
    args = ["perf", "--shape", "tiny", "--methods", "lora", "--batch-size", "2", "--seq-len", "32", "--rounds", "3",
            "--steps-per-round", "2", "--no-progress"]
    assert cli.main([*args, "--check", str(path), "--update"]) == 0
    assert json.loads(path.read_text())["methods"]["lora"]["trainable_params"] == 65536
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    code = cli.main(["perf", "--check", str(path), "--no-progress", "--json", str(tmp_path / "now.json")])
    assert code in (0, 1) and "bench perf --check" in summary.read_text()
    assert json.loads((tmp_path / "now.json").read_text())["config"]["seq_len"] == 32  # the baseline's setup
    assert cli.main(["perf", "--check", str(tmp_path / "missing.json"), "--no-progress"]) == 2
    # re-recording an existing baseline keeps its setup unless options say otherwise
    assert cli.main(["perf", "--check", str(path), "--update", "--no-progress", "--rounds", "2"]) == 0
    config = json.loads(path.read_text())["config"]
    assert (config["shape"], config["seq_len"], config["methods"], config["rounds"]) == ("tiny", 32, ["lora"], 2)


@pytest.mark.parametrize("args, needle", [(["--start-step", "-1"], "--start-step"), (["--rounds", "0"], "--rounds"),
                                          (["--methods", "nosuch"], "unknown method 'nosuch'")])
def test_bad_perf_options_are_one_line(args, needle, capsys):
    assert cli.main(["perf", "--shape", "tiny", "--no-progress", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err


def test_profile_breakdown_counts_losia_pro_gathers_per_step(capsys):
    """Outside its profiling windows every LoSiA-Pro target gathers x[:, C] in forward and
    grad_out[:, R] in backward: 2 gathers per target per step, none in the floor."""
    code = cli.main(["perf", "--shape", "tiny", "--methods", "losia-pro", "--rounds", "1", "--steps-per-round", "1",
                     "--set", "losia-pro.sync=true", "--start-step", "100", "--profile", "2", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0
    section = out.split("losia-pro: profiled self time", 1)[1]
    gather = next(line.split() for line in section.splitlines() if line.strip().startswith("aten::gather"))
    assert gather[3:] == ["28", "0"]  # calls/step, floor calls: 2 layers x 7 projections x 2
