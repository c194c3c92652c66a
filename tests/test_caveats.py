"""Caveats in the run summary (fair budgets, chance level, load) and the evidence behind marks and bars."""
from __future__ import annotations

import numpy as np
import pytest

from reports import caveats, evidence
from reports.load import load_results
from tests.test_comparison import outcomes, write_run


def record(method: str, lr: float = 2e-4, steps: int = 200, load: float | None = None, acc: float = 0.6,
           n: int = 200, chance: float | None = 0.5, task: str = "boolq") -> dict:
    rec = {"config": {"model": "m", "method": method, "seed": 0,
                      "train": {"lr": lr, "max_steps": steps, "epochs": 0.0, "batch_size": 8, "max_length": 128}},
           "evals": [{"task": task, "phase": "before", "chance": chance,
                      "metrics": [{"name": "acc", "value": acc, "n": n}]}]}
    if load is not None:
        rec["load"] = {"cpu_count": 2, "start": {"load1": load}, "end": {"load1": 1.0}, "cores_used": 1.2,
                       "cpu_time_s": 12.0, "wall_s": 10.0}
    return rec


def test_fair_budget_says_what_was_shared_and_that_lr_was_not_tuned():
    text = caveats.fair_budget([record("losia"), record("lora")])
    assert text.startswith("budget shared by all 2 methods: lr 0.0002, max_steps 200, batch_size 8, "
                           "max_length 128.")
    assert "not tuned per method" in text and "--tune lr" in text
    mixed = caveats.fair_budget([record("losia", lr=5e-5), record("lora")])
    assert "differing: lr (losia 5e-05, lora 0.0002)" in mixed and "shared by all 2 methods: max_steps 200" in mixed
    assert "lr was tuned per method" in caveats.fair_budget([record("lora")], tuned="lr")


def test_chance_and_load_lines():
    recs = [record("losia", acc=0.22, chance=0.25, task="obqa", load=11.0), record("lora", acc=0.22, chance=0.25,
                                                                                  task="obqa"),
            record("lora", acc=0.6, task="boolq")]
    (line,) = caveats.chance_lines(recs)  # once per (model, task), and boolq at 60% of 200 is above chance
    assert line.startswith("obqa: base model 22.0% [95% CI 16.5, 28.4] on 200 items vs chance 25.0%: not above")
    (busy,) = caveats.load_lines(recs)
    assert busy.startswith("losia seed 0: step times measured under load 11 -> 1 (1-min average") and "2 CPUs" in busy
    text = caveats.caveats(recs)
    assert "CHANCE LEVEL: obqa" in text and "BUSY MACHINE: losia" in text and "budget shared" in text


def test_evidence_grids_intervals_and_pooling(tmp_path):
    a, _ = outcomes(10, 2, 10, 18)
    write_run(tmp_path, "lora", 0, {"boolq": a[:, 0], "obqa": [1, 0, 0, 0]})
    write_run(tmp_path, "lora", 1, {"boolq": a[:, 0], "obqa": [1, 1, 0, 0]})
    ev = evidence.accuracy_evidence(load_results([tmp_path]), ["boolq", "obqa"])
    grids = ev[("m", "lora")]
    assert grids["boolq"].seeds == (0, 1) and grids["boolq"].correct.shape == (40, 2)
    assert grids["obqa"].per_seed() == (0.25, 0.5)
    acc, low, high = evidence.interval([grids["boolq"]])
    assert acc == pytest.approx(0.3) and low < 0.3 < high
    avg = evidence.interval(list(grids.values()))
    assert avg[0] == pytest.approx((0.3 + 0.375) / 2)
    both = evidence.pooled(grids)
    assert both.correct.shape == (44, 2) and both.ids[0] == "boolq/test-0" and both.ids[-1] == "obqa/test-3"
    assert np.array_equal(both.correct[-4:], grids["obqa"].correct)
