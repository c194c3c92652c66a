"""Live progress: every step reaches steps.jsonl (and any observer) while training runs."""
from __future__ import annotations

import json

import torch

from harness.models import load_model
from harness.records import read_jsonl
from harness.runfolder import StepLog
from harness.trainer import train
from methods import registry
from methods.base import TrainContext


def _batches():
    for seed in range(100):
        ids = torch.randint(3, 512, (2, 12), generator=torch.Generator().manual_seed(seed))
        yield [{"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}]


def test_each_step_is_on_disk_before_the_next_one_starts(tmp_path):
    spec = registry.get("lora")
    adapted = spec.adapt(load_model("tiny-llama")[0], spec.default_config(), TrainContext(total_steps=3))
    path = tmp_path / "steps.jsonl"
    log = StepLog(path, kept=[{"step": 0, "stage": 1, "loss": 9.0}])  # a finished stage kept on resume
    seen_on_disk: list[int] = []

    def on_step(step):
        log.write(step)
        seen_on_disk.append(len(path.read_text().splitlines()))  # read by another reader, mid-run

    result = train(adapted, _batches(), 3, torch.device("cpu"), 1.0, profile_step=-1, progress=False, on_step=on_step)
    log.close()
    assert seen_on_disk == [2, 3, 4]
    rows = read_jsonl(path)
    assert rows[0]["stage"] == 1 and [r["step"] for r in rows[1:]] == [0, 1, 2]
    assert rows[1:] == json.loads(json.dumps(result.steps))
    assert all(r["rss_bytes"] > 0 for r in rows[1:])  # memory per step (CPU: the process RSS)
