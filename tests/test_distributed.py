"""One run on two CPU processes (gloo, torch.distributed.run) equals the same run on one.

Each method is trained twice on tiny-llama, ``--max-steps 6 --batch-size 8 --save adapter``: in
this process (``--executor inline``) and with ``--nproc 2``. The saved trainable weights must
agree within 1e-5 (max abs; relative to the weights' scale for full fine-tuning, which saves whole
matrices), the per-step losses within 1e-5, LoSiA's ``subnets.jsonl`` exactly. Dropout is set
to 0: dropout masks are drawn per rank (harness.distributed.team), so with dropout the two runs
are two draws of the same training, not one trajectory.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from harness import cli, records

TOL = 1e-5
BASE = ["run", "--model", "tiny-llama", "--tasks", "synthetic", "--max-steps", "6", "--set", "batch_size=8",
        "--save", "adapter", "--eval-limit", "4", "--retention", "none", "--no-progress", "--device", "cpu",
        "--set", "eval_batch_size=4"]
NO_DROPOUT = {"lora": ["lora.lora_dropout=0"], "dora": ["dora.lora_dropout=0"],
              "localized-lora": ["localized-lora.dropout=0"], "sensitivity-lora": ["sensitivity-lora.lora_dropout=0"]}
METHODS = ["lora", "dora", "full", "galore", "losia", "losia-pro", "localized-lora", "sensitivity-lora", "peft:ia3"]

needs_two_cores = pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="two ranks need two CPU cores")


def train(out: Path, method: str, *extra: str) -> Path:
    """Run ``method`` into ``out``; returns its run folder."""
    sets = [arg for s in NO_DROPOUT.get(method, []) for arg in ("--set", s)]
    assert cli.main([*BASE, "--methods", method, "--out", str(out), *sets, *extra]) == 0
    [folder] = (out / "runs").iterdir()
    assert records.read_run(folder / "run.json")["status"] == "ok"
    return folder


def saved_weights(folder: Path) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for f in sorted((folder / "adapter").rglob("*.safetensors")):
        tensors.update({f"{f.name}:{k}": v for k, v in load_file(f).items()})
    assert tensors, f"nothing saved in {folder / 'adapter'}"
    return tensors


def weight_difference(one: dict[str, torch.Tensor], two: dict[str, torch.Tensor], relative: bool) -> float:
    """Largest difference over the saved tensors (relative: over each tensor's largest magnitude)."""
    assert one.keys() == two.keys()
    worst = 0.0
    for k in one:
        diff = float((one[k].double() - two[k].double()).abs().max())
        scale = float(one[k].double().abs().max()) if relative else 1.0
        worst = max(worst, diff / scale if scale else diff)
    return worst


def losses(folder: Path) -> list[float]:
    return [s["loss"] for s in records.read_jsonl(folder / "steps.jsonl")]


@pytest.mark.slow
@needs_two_cores
@pytest.mark.parametrize("method", METHODS)
def test_two_processes_train_as_one(tmp_path, method):
    one = train(tmp_path / "one", method, "--executor", "inline")
    two = train(tmp_path / "two", method, "--nproc", "2")
    diff = weight_difference(saved_weights(one), saved_weights(two), relative=method == "full")
    print(f"{method}: max weight difference {diff:.3g}")
    assert diff <= TOL
    assert len(losses(one)) == len(losses(two)) == 6
    assert max(abs(a - b) for a, b in zip(losses(one), losses(two))) <= TOL
    record = records.read_run(two / "run.json")
    assert record["distributed"]["world_size"] == 2
    assert len(set(record["distributed"]["checksums"])) == 1
    if method.startswith("losia"):
        assert (one / "subnets.jsonl").read_text() == (two / "subnets.jsonl").read_text()
