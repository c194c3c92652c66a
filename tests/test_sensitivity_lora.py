"""Sensitivity-LoRA: exact budgets, rank follows sensitivity, rank-0 exclusion, uniform fallback."""
from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from harness.models import load_model
from methods import registry
from methods.base import TrainContext
from methods.sensitivity_lora.allocation import allocate
from methods.sensitivity_lora.sensitivity import combine, diag_hessian, local_sensitivity

# the tiny model's seven targets per layer (out, in): GQA k/v are smaller, the MLP bigger
TINY = {"q": (64, 64), "k": (32, 64), "v": (32, 64), "o": (64, 64), "gate": (128, 64), "up": (128, 64),
        "down": (64, 128)}
MAX_COST = max(sum(s) for s in TINY.values())


def _calibration(seed: int = 0):
    def batches():
        g = torch.Generator().manual_seed(seed)
        while True:
            ids = torch.randint(3, 512, (2, 12), generator=g)
            yield {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}
    return batches


def _adapt(cfg_changes: dict | None = None, prepare=None, ctx: TrainContext | None = None):
    spec = registry.get("sensitivity-lora")
    cfg = spec.default_config()
    for k, v in (cfg_changes or {}).items():
        setattr(cfg, k, v)
    model, _ = load_model("tiny-llama")
    handles = prepare(model) if prepare else []
    adapted = spec.adapt(model, cfg, ctx or TrainContext(calibration_batches=_calibration()))
    for h in handles:
        h.remove()
    return adapted


def _lora_params(r: int = 32) -> int:
    lora = registry.get("lora")
    cfg = lora.default_config()
    cfg.r = r
    return lora.adapt(load_model("tiny-llama")[0], cfg, TrainContext()).trainable_params()


# -- allocation -----------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(5))
def test_budget_exact_with_equal_shapes(seed):
    rng = random.Random(seed)
    shapes = {f"m{i}": (64, 64) for i in range(14)}
    scores = {w: rng.random() ** 3 for w in shapes}
    ranks = allocate(scores, shapes, r=16)
    assert sum(ranks.values()) == 16 * 14
    order = sorted(shapes, key=scores.get)
    assert all(ranks[a] <= ranks[b] for a, b in zip(order, order[1:]))  # rank follows sensitivity


@pytest.mark.parametrize("seed", range(5))
def test_budget_within_one_matrix_with_mixed_shapes(seed):
    rng = random.Random(seed)
    scores = {w: rng.random() for w in TINY}
    ranks = allocate(scores, TINY, r=32)
    budget = 32 * sum(sum(s) for s in TINY.values())
    spent = sum(ranks[w] * sum(TINY[w]) for w in TINY)
    assert budget - MAX_COST < spent <= budget
    assert all(0 <= ranks[w] <= min(TINY[w]) for w in TINY)


def test_equal_sensitivities_give_uniform_lora():
    assert allocate({w: 0.3 for w in TINY}, TINY, r=32) == {w: 32 for w in TINY}
    assert allocate({w: 1.0 for w in TINY}, TINY, r=7) == {w: 7 for w in TINY}


def test_zero_sensitivity_gets_rank_zero_unless_r_min():
    scores = {w: 1.0 for w in TINY} | {"q": 0.0}
    assert allocate(scores, TINY, r=8)["q"] == 0
    assert allocate(scores, TINY, r=8, r_min=2)["q"] == 2
    with pytest.raises(ValueError, match="cannot be met"):
        allocate(scores, TINY, r=8, r_max=4)


# -- sensitivity ----------------------------------------------------------------------------
class _Quadratic(nn.Module):
    """loss = 1/2 ||W x - y||^2, so h for W_ij is x_j^2 and the gradient is (W x - y) x^T."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 3, bias=False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(loss=0.5 * ((self.lin(x) - y) ** 2).sum())


def test_fisher_and_hutchinson_estimates():
    torch.manual_seed(0)
    model = _Quadratic()
    w = model.lin.weight
    batches = [{"x": torch.eye(4)[j], "y": torch.randn(3)} for j in (0, 2)]
    fisher = diag_hessian(model, {"w": w}, batches, "fisher")["w"]
    grads = [torch.outer(w.detach() @ b["x"] - b["y"], b["x"]) for b in batches]
    torch.testing.assert_close(fisher, (grads[0] ** 2 + grads[1] ** 2) / 2)
    # one-hot inputs make the Hessian diagonal, so one Rademacher probe is exact: mean of x_j^2
    hutch = diag_hessian(model, {"w": w}, batches, "hutchinson")["w"]
    torch.testing.assert_close(hutch, torch.tensor([[0.5, 0, 0.5, 0]] * 3))
    assert w.grad is None


def test_local_metrics_and_combination():
    assert local_sensitivity(torch.outer(torch.rand(8) + 0.1, torch.rand(6) + 0.1)) == pytest.approx(1.0)
    assert local_sensitivity(torch.eye(6)) == pytest.approx(6.0)
    h = torch.ones(10, 10)
    h[3, 4] = 101.0
    assert local_sensitivity(h, "topk", topk_fraction=0.01) == pytest.approx(101 / 200)
    s = combine({"a": 1.0, "b": 3.0}, {"a": 2.0, "b": 2.0}, beta=0.5)
    assert s == pytest.approx({"a": 0.25**0.5 * 0.5**0.5, "b": 0.75**0.5 * 0.5**0.5})
    assert combine({"a": 1.0, "b": 3.0}, {"a": 2.0, "b": 6.0}, beta=0.0) == pytest.approx({"a": 0.25, "b": 0.75})


# -- end to end on the tiny model -----------------------------------------------------------
GATE = "model.layers.1.mlp.gate_proj"


def test_trainable_params_match_uniform_lora_within_one_matrix():
    adapted = _adapt()
    lora = _lora_params()
    rec = adapted.record()
    assert adapted.trainable_params() == rec["allocated_params"]
    assert rec["budget_params"] == lora
    assert lora - MAX_COST < adapted.trainable_params() <= lora
    assert len(rec["ranks"]) == 14 and rec["calibration"] == "fisher, 8 batches"
    assert not any(p.grad is not None for p in adapted.model.parameters())  # calibration left no grads
    scalings = {m.scaling["default"] for m in adapted.model.modules() if hasattr(m, "lora_A") and m.lora_A}
    assert scalings == {2.0}  # alpha_w / r_w = 64 / 32 everywhere


def test_larger_gradients_get_more_rank():
    base = _adapt()
    boosted = _adapt(prepare=lambda m: [m.get_submodule(GATE).weight.register_hook(lambda g: 3 * g)])
    before, after = base.record(), boosted.record()
    assert after["sensitivity"][GATE]["global"] == pytest.approx(9 * before["sensitivity"][GATE]["global"], rel=1e-4)
    assert after["ranks"][GATE] > before["ranks"][GATE]
    assert after["allocated_params"] <= after["budget_params"]


def test_rank_zero_matrix_is_not_wrapped():
    from peft.tuners.lora import LoraLayer

    adapted = _adapt(prepare=lambda m: [m.get_submodule(GATE).weight.register_hook(lambda g: 0 * g)])
    rec = adapted.record()
    assert rec["ranks"][GATE] == 0 and rec["excluded"] == [GATE]
    gate = adapted.model.base_model.model.get_submodule(GATE)
    assert type(gate) is nn.Linear and not isinstance(gate, LoraLayer)
    assert sum(isinstance(m, LoraLayer) for m in adapted.model.modules()) == 13
    assert _lora_params() - MAX_COST < adapted.trainable_params() <= _lora_params()


def test_without_calibration_data_it_refuses():
    with pytest.raises(ValueError, match="calibration batches"):
        _adapt(ctx=TrainContext())


@pytest.mark.parametrize("preset", ["hutchinson", "global-only", "local-only"])
def test_presets_run_and_spend_the_budget(preset):
    adapted = _adapt(registry.get("sensitivity-lora").presets[preset])
    rec = adapted.record()
    assert rec["budget_params"] - MAX_COST < rec["allocated_params"] <= rec["budget_params"]
    assert all(s["score"] >= 0 for s in rec["sensitivity"].values())
