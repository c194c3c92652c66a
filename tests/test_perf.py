"""bench perf and --check: figures, the baseline file, the regression verdict and its re-measure."""
from __future__ import annotations

import json
import random

import pytest

from harness import cli, metrics
from harness.perf import baseline as baselines
from harness.perf import command, verdict
from harness.perf.counters import open_instruction_counter
from harness.perf.timing import Contender, PerfConfig, measure

CFG = dict(shape="tiny", methods=("lora",), batch_size=4, seq_len=64, rounds=5, steps_per_round=2, warmup_steps=1)
DEVICE = {"type": "cpu", "name": "CPU A", "count": 2, "threads": 1}


@pytest.fixture(scope="module")
def result():
    return measure(PerfConfig(**CFG), progress=False)


@pytest.mark.slow
def test_perf_reports_ratios_per_round_and_memory(result):
    rows = result["methods"]
    assert set(rows) == {"floor", "lora"}
    assert rows["floor"]["ratio_to_floor_rounds"] == [1.0] * 5 and rows["floor"]["trainable_params"] == 0
    lora = rows["lora"]
    assert len(lora["ratio_to_floor_rounds"]) == 5 and lora["ratio_to_lora"] == 1.0
    assert lora["trainable_params"] == 65536  # r=32 on every projection of the 2-layer tiny model
    assert lora["activation_bytes"] > rows["floor"]["activation_bytes"] > 0
    assert lora["optimizer_state_bytes"] == 2 * 4 * 65536 + 4 * 28  # exp_avg, exp_avg_sq + 28 step scalars
    assert lora["flops_per_step"] > rows["floor"]["flops_per_step"]
    assert result["instructions"]  # counted, or the reason it is not


def test_perf_header_states_the_machine_load(result):
    from harness.perf.timing import format_table

    assert {"start", "end", "cpu_count", "cores_used"} <= set(result["load"])
    busy = {**result, "load": {**result["load"], "cpu_count": 2, "start": {"load1": 9.0}, "end": {"load1": 1.0}}}
    quiet = {**result, "load": {**busy["load"], "start": {"load1": 1.0}}}
    assert format_table(busy).splitlines()[1].startswith("BUSY MACHINE: load 9 -> 1 (1-min average")
    assert format_table(quiet).splitlines()[1].startswith("load 1 -> 1")


def _samples(center: float, n: int, noise: float, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [center * (1 + rng.uniform(-noise, noise)) for _ in range(n)]


def _measurement(rounds: list[float], device: dict = DEVICE, **figures: float) -> dict:
    row = {"ratio_to_floor_rounds": rounds, "activation_bytes": 100, **figures}
    return {"config": {**CFG, "methods": ["m"], "rounds": len(rounds), "threads": 1}, "device": device,
            "torch": "x", "instructions": "counted", "methods": {"floor": {"ratio_to_floor_rounds": [1.0] * len(rounds)},
                                                                  "m": row}}


def _baseline(rounds: list[float], **figures: float) -> dict:
    return baselines.with_measurement(None, _measurement(rounds, **figures))[0]


@pytest.mark.parametrize("seed", range(5))
def test_noise_passes_and_a_13x_shift_is_flagged(seed):
    base = _baseline(_samples(2.0, 9, 0.15, seed))
    noisy = verdict.compare(base, _measurement(_samples(2.0, 9, 0.15, seed + 100)))
    assert not noisy.failed, verdict.markdown(noisy, "b")
    slowed = verdict.compare(base, _measurement(_samples(2.6, 9, 0.15, seed + 100)))
    assert slowed.failed and slowed.suspects() == ["m"]


def test_evidence_alone_or_size_alone_is_not_a_regression():
    base = _baseline([2.0, 2.001, 2.002, 2.003, 2.004, 2.005, 2.006, 2.007, 2.008])
    small = verdict.compare(base, _measurement([2.1 + i / 1000 for i in range(9)]))  # significant, +5%
    assert small.findings[0].p < verdict.ALPHA and not small.failed
    one_round = verdict.compare(base, _measurement([1.9, 2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 9.0, 9.0]))
    assert not one_round.failed  # two disturbed rounds move neither the median nor the ranks much


def test_another_cpu_gets_the_wider_threshold_and_no_instruction_gate():
    base = _baseline([2.0] * 4 + [2.01] * 5, instructions_per_step=1000)
    other = {**DEVICE, "name": "CPU B"}
    shifted = _measurement([2.4] * 9, other, instructions_per_step=2000)  # +20%: within +25%
    comparison = verdict.compare(base, shifted)
    assert not comparison.failed and comparison.threshold == verdict.OTHER_MACHINE_THRESHOLD
    assert any("no baseline entry for this machine ('CPU B x2')" in n for n in comparison.notes)
    assert verdict.compare(base, _measurement([2.0] * 9, instructions_per_step=2000)).failed  # same CPU: gated


def test_deterministic_figures_gate_exactly():
    base = _baseline([2.0] * 9)
    comparison = verdict.compare(base, _measurement([2.0] * 9, activation_bytes=120))
    assert [f.figure for f in comparison.findings if f.regressed] == ["activation_bytes"]
    assert comparison.suspects() == []  # nothing to re-measure: bytes do not wobble
    other = _measurement([2.0] * 9)
    other["config"]["seq_len"] = 128
    with pytest.raises(baselines.BaselineError, match="another setup"):
        verdict.compare(base, other)


@pytest.mark.parametrize("again, fails", [(2.0, False), (2.6, True)])
def test_a_suspect_is_re_measured_and_fails_only_if_it_regresses_again(again, fails, monkeypatch):
    base = _baseline(_samples(2.0, 9, 0.05, 1))
    calls = []

    def fake_measure(cfg, progress=True, profile_steps=0):
        calls.append(cfg)
        return _measurement(_samples(again, cfg.rounds, 0.05, 2))

    monkeypatch.setattr(command, "measure", fake_measure)
    cfg = PerfConfig(**{**CFG, "methods": ("m", "other"), "rounds": 9})
    comparison = command.check(cfg, base, _measurement(_samples(2.6, 9, 0.05, 3)), progress=False)
    assert [(c.methods, c.rounds) for c in calls] == [(("m",), 18)]  # the suspect only, twice the rounds
    assert comparison.failed is fails
    assert ("regressed again" if fails else "not confirmed") in verdict.markdown(comparison, "b")


def test_too_few_rounds_say_that_nothing_can_fail():
    comparison = verdict.compare(_baseline([2.0] * 3), _measurement([9.0] * 3))
    assert not comparison.failed and any("cannot reach" in n for n in comparison.notes)


def test_update_keeps_one_entry_per_machine():
    base = _baseline([2.0] * 9)
    other = _measurement([3.0] * 9, {**DEVICE, "name": "CPU B"})
    both, notes = baselines.with_measurement(base, other)
    assert list(both["machines"]) == ["CPU A x2", "CPU B x2"] and not notes
    again, _ = baselines.with_measurement(both, _measurement([2.2] * 9))
    assert again["machines"]["CPU A x2"]["methods"]["m"]["ratio_to_floor_rounds"] == [2.2] * 9
    other["config"]["seq_len"] = 128
    only, notes = baselines.with_measurement(both, other)
    assert list(only["machines"]) == ["CPU B x2"] and "another setup" in notes[0]
    text = baselines.dumps(both)
    assert '"ratio_to_floor_rounds": [3.0, 3.0' in text and json.loads(text) == both


@pytest.mark.parametrize("content, needle", [
    ('{"format": 2, "config": {"shape": "tiny"', "not readable JSON"),
    ('[1, 2]', "not a bench perf baseline"),
    ('{"config": {}, "device": {}, "methods": {}}', "format: none"),
    (None, "lacks per-round ratios"),
])
def test_a_bad_baseline_is_one_line_before_any_measurement(tmp_path, monkeypatch, capsys, content, needle):
    path = tmp_path / "b.json"
    if content is None:
        bad = _baseline([2.0] * 9)
        del bad["machines"]["CPU A x2"]["methods"]["m"]["ratio_to_floor_rounds"]
        content = json.dumps(bad)
    path.write_text(content)
    monkeypatch.setattr(command, "measure", lambda *a, **k: pytest.fail("measured before validating"))
    assert cli.main(["perf", "--check", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err


def test_injected_slowdown_stretches_the_timed_step():
    ticks = iter([0.0, 0.1, 0.1, 0.12, 0.131, 0.131])  # start, step done (x2), busy-waiting, read
    clock = type("Clock", (), {"now": lambda self: next(ticks)})()
    contender = Contender("m", lambda step, profile: None, model=None, trainable=0, tokens=1)
    contender.slowdown = 1.3  # the step took 0.1: it busy-waits until 0.13 on the same clock
    assert contender.run(1, clock) == [0.131]


def test_each_ratio_pairs_a_method_step_by_step_with_the_floor(monkeypatch):
    """A machine that slows down steadily cancels in the ratio: every round of a method that costs
    exactly 2x the floor reads 2.0, because its steps alternate one by one with floor steps."""
    from torch import nn

    from harness.perf import timing

    clock = {"now": 0.0, "speed": 1.0}
    order: list[str] = []

    def contender(name: str, cost: float) -> Contender:
        def step(_: int, profile: dict | None) -> None:
            if profile is None:
                order.append(name)
            if name == timing.FLOOR:
                clock["speed"] *= 1.1  # the machine drifts: each floor step is 10% slower than the last
            clock["now"] += cost * clock["speed"]
        return Contender(name, step, nn.Linear(2, 2), 0, 1)

    monkeypatch.setattr(timing, "StepClock", lambda device: type("C", (), {"now": lambda self: clock["now"]})())
    monkeypatch.setattr(timing, "_floor", lambda *a: contender(timing.FLOOR, 1.0))
    monkeypatch.setattr(timing, "_method", lambda name, *a: contender(name, {"a": 2.0, "b": 3.0}[name]))
    result = measure(PerfConfig(shape="tiny", methods=("a", "b"), rounds=4, steps_per_round=3, warmup_steps=0),
                     progress=False)
    timed = order[-4 * 2 * 3 * 2:]
    assert timed[0::2] == [timing.FLOOR] * 24 and set(timed[1::2]) == {"a", "b"}
    assert result["methods"]["a"]["ratio_to_floor_rounds"] == pytest.approx([2.0] * 4)
    assert result["methods"]["b"]["ratio_to_floor_rounds"] == pytest.approx([3.0] * 4)


def test_instruction_counter_counts_or_says_why():
    counter, reason = open_instruction_counter()
    if counter is None:
        assert reason
    else:
        assert counter.count(lambda: sum(range(10000))) > 10000
        counter.close()


@pytest.mark.slow
def test_cli_update_check_repeat_and_summary(tmp_path, monkeypatch, capsys):
    path = tmp_path / "base.json"
    args = ["perf", "--shape", "tiny", "--methods", "lora", "--batch-size", "2", "--seq-len", "32", "--rounds", "5",
            "--steps-per-round", "1", "--threads", "1", "--clock", "cpu", "--no-progress"]
    assert cli.main([*args, "--check", str(path), "--update", "--repeat", "2"]) == 0
    data = baselines.load(path)
    assert (data["config"]["threads"], data["config"]["clock"], len(data["machines"])) == (1, "cpu", 1)
    entry = next(iter(data["machines"].values()))  # two measurements' rounds pooled; a check measures 5
    assert entry["measurements"] == 2 and len(entry["methods"]["lora"]["ratio_to_floor_rounds"]) == 10
    # CPU time is stored as CPU time, under catalogued names only
    raw = json.loads(path.read_text())["machines"][next(iter(data["machines"]))]["methods"]["lora"]
    assert "step_cpu_time_s" in raw and "step_time_s" not in raw and "tokens_per_cpu_s" in raw
    metrics.check(raw, "the recorded baseline")
    assert data["config"]["rounds"] == 5
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    code = cli.main(["perf", "--check", str(path), "--no-progress", "--json", str(tmp_path / "now.json")])
    assert code in (0, 1) and "bench perf --check" in summary.read_text()
    assert json.loads((tmp_path / "now.json").read_text())["config"]["seq_len"] == 32  # the baseline's setup
    capsys.readouterr()
    assert cli.main(["perf", "--check", str(path), "--repeat", "1", "--inject-slowdown", "lora=1.5"]) in (0, 1)
    out = capsys.readouterr().out
    assert "check 1/1:" in out and "detection: " in out and "/1 checks failed on the injected slowdown" in out
    assert cli.main(["perf", "--check", str(tmp_path / "missing.json"), "--no-progress"]) == 2


@pytest.mark.parametrize("args, needle", [
    (["--start-step", "-1"], "--start-step"), (["--rounds", "0"], "--rounds"),
    (["--methods", "nosuch"], "unknown method 'nosuch'"),
    (["--methods", "lora", "--inject-slowdown", "dora=1.3"], "--inject-slowdown 'dora=1.3'"),
    (["--methods", "lora", "--inject-slowdown", "lora=fast"], "METHOD=FACTOR"),
    (["--methods", "lora", "--repeat", "3"], "--repeat works with --check BASELINE"),
    (["--methods", "lora", "--inject-slowdown", "lora=1.3"], "--inject-slowdown works with --check BASELINE"),
    (["--methods", "lora", "--clock", "cpu"], "--clock cpu times one thread"),
])
def test_bad_perf_options_are_one_line(args, needle, capsys):
    assert cli.main(["perf", "--shape", "tiny", "--no-progress", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err


@pytest.mark.slow
def test_profile_breakdown_counts_losia_pro_gathers_per_step(tmp_path, capsys):
    """Outside its profiling windows LoSiA-Pro gathers x[:, C] once per shared input in forward
    (q/k/v share one, gate/up share one, o and down their own: 4 a layer) and grad_out[:, R] once
    per target in backward (7 a layer); none in the floor. Read from the
    JSON: the printed table lists the top ops by profiled time, which a loaded machine reorders."""
    out_json = tmp_path / "p.json"
    code = cli.main(["perf", "--shape", "tiny", "--methods", "losia-pro", "--rounds", "1", "--steps-per-round", "1",
                     "--set", "losia-pro.sync=true", "--start-step", "100", "--profile", "2", "--no-progress",
                     "--json", str(out_json)])
    assert code == 0 and "losia-pro: profiled self time" in capsys.readouterr().out
    ops = json.loads(out_json.read_text())["op_profile"]["ops"]
    assert ops["losia-pro"]["aten::gather"]["calls"] == 22 and "aten::gather" not in ops["floor"]  # 2 layers x (4 + 7)


def test_committed_baselines_read_with_catalogued_figures():
    """The committed format-3 baselines (CPU clock, recorded when CPU time was stored as
    ``step_time_s``) load with their times under the CPU names, and every figure is catalogued."""
    from pathlib import Path

    for path in sorted(Path(__file__).parents[1].glob("results/baselines/*.json")):
        data = baselines.load(path)
        assert data["config"]["clock"] == "cpu"
        for entry in data["machines"].values():
            for row in entry["methods"].values():
                metrics.check(row, str(path))
                assert "step_cpu_time_s" in row and "step_time_s" not in row
