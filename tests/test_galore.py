"""GaLore through galore-torch: projected moments on decoder linears, plain AdamW elsewhere."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from harness.models import TINY_LLAMA_CONFIG, build_llama
from methods.base import TrainContext
from methods.galore import GaloreConfig, adapt

pytest.importorskip("galore_torch")


def _batch(seed: int) -> dict[str, torch.Tensor]:
    ids = torch.randint(3, TINY_LLAMA_CONFIG["vocab_size"], (2, 16), generator=torch.Generator().manual_seed(seed))
    return {"input_ids": ids, "labels": ids}


def test_galore_projects_linears_and_trains_everything() -> None:
    model = build_llama(TINY_LLAMA_CONFIG, seed=0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    a = adapt(model, GaloreConfig(rank=8, update_proj_gap=2), TrainContext(lr=1e-3, total_steps=3))
    for step in range(3):
        a.before_step(step)
        a.model(**_batch(step)).loss.backward()
        a.clip_gradients(1.0)
        a.optimizer.step(); a.scheduler.step(); a.after_step(step); a.zero_grad()
    assert all(not torch.equal(p, before[n]) for n, p in model.named_parameters())
    assert a.trainable_params() == sum(p.numel() for p in model.parameters())
    layer = model.model.layers[0]
    state = a.optimizer.state
    # "std" projects the smaller side: q (64x64) and gate (128x64) on the right, down (64x128) on the left
    assert state[layer.self_attn.q_proj.weight]["exp_avg"].shape == (64, 8)
    assert state[layer.mlp.gate_proj.weight]["exp_avg"].shape == (128, 8)
    assert state[layer.mlp.down_proj.weight]["exp_avg"].shape == (8, 128)
    assert state[model.model.embed_tokens.weight]["exp_avg"].shape == (512, 64)
    moments = 2 * (64 * 8 * 2 + 8 * 64 * 2 + 128 * 8 * 2 + 8 * 128)  # exp_avg + exp_avg_sq, per layer
    # galore-torch keeps its basis as a slice (a view) of the full SVD factor, so the whole
    # factor stays alive: the memory actually held is 64x64 for q, o, gate, up, down, 32x32 for k, v
    bases = 5 * 64 * 64 + 2 * 32 * 32
    dense = 2 * (2 * 512 * 64 + 5 * 64)
    assert a.optimizer_state_bytes() == 4 * (2 * moments + 2 * bases + dense)
    assert a.record()["projected_weights"] == 14


def test_galore_registry_entry() -> None:
    from methods import registry

    spec = registry.get("galore")
    assert spec.config_keys() == [f.name for f in dataclasses.fields(GaloreConfig)]
    assert spec.requires == ("galore_torch", "galore")
