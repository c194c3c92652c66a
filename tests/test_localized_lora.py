"""Localized LoRA: budget, exact merge, equivalence with peft GraLoRA (grid) and LoRA (K = 1)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from harness.models import load_model
from methods import registry
from methods.base import TrainContext
from methods.localized_lora.config import LocalizedLoraConfig
from methods.localized_lora.model import wrap_targets
from methods.localized_lora.layer import LocalizedLinear


class _One(nn.Module):
    """A model with a single target, as peft needs a parent module to inject into."""

    def __init__(self, m: int = 48, n: int = 32, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.lin = nn.Linear(n, m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)


def _layer(structure: str, k: int = 4, r_b: int = 2, scaling: float = 0.5, seed: int = 0) -> LocalizedLinear:
    layer = LocalizedLinear(_One(seed=seed).lin, structure, k, r_b, scaling)
    with torch.no_grad():  # B is zero at init; make dW non-trivial
        layer.lora_B.normal_(generator=torch.Generator().manual_seed(seed + 1))
    return layer


def _x(n: int = 32) -> torch.Tensor:
    return torch.randn(3, 5, n, generator=torch.Generator().manual_seed(7))


@pytest.mark.parametrize("name", ["localized-lora", "localized-lora-diag"])
@pytest.mark.parametrize("r", [32, 8])
def test_trainable_params_equal_lora(name, r):
    lora = registry.get("lora")
    lora_cfg = lora.default_config()
    lora_cfg.r = r
    expected = lora.adapt(load_model("tiny-llama")[0], lora_cfg, TrainContext()).trainable_params()
    spec = registry.get(name)
    cfg = spec.default_config()
    cfg.r = r
    adapted = spec.adapt(load_model("tiny-llama")[0], cfg, TrainContext())
    assert adapted.trainable_params() == expected
    assert adapted.record()["adapted_matrices"] == 14
    frozen = [p for n, p in adapted.model.named_parameters() if "lora_" not in n]
    assert frozen and not any(p.requires_grad for p in frozen)


@pytest.mark.parametrize("structure", ["grid", "diagonal"])
def test_einsum_forward_and_exact_merge(structure):
    layer = _layer(structure)
    x = _x()
    w0 = layer.base_layer.weight.detach().clone()
    out = layer(x)
    dense = x @ (w0 + layer.delta_weight()).T + layer.base_layer.bias
    torch.testing.assert_close(out, dense, rtol=1e-5, atol=1e-5)
    layer.merge()
    torch.testing.assert_close(layer(x), out, rtol=1e-5, atol=1e-5)
    layer.unmerge()
    torch.testing.assert_close(layer.base_layer.weight, w0, rtol=0, atol=1e-6)
    torch.testing.assert_close(layer(x), out, rtol=1e-6, atol=1e-6)


def test_zero_init_keeps_base_output():
    layer = LocalizedLinear(_One().lin, "grid", 4, 2, 1.0)
    x = _x()
    torch.testing.assert_close(layer(x), layer.base_layer(x))
    bound = 1 / (32 / 4) ** 0.5  # kaiming-uniform bound with each block's fan-in n/K
    assert 0.8 * bound < float(layer.lora_A.detach().abs().max()) <= bound


@pytest.mark.parametrize("convention", ["global", "block"])
def test_grid_equals_peft_gralora(convention):
    from peft import GraloraConfig, get_peft_model

    k, r, alpha = 4, 8, 16.0
    cfg = LocalizedLoraConfig(r=r, num_blocks=k, alpha=alpha, dropout=0.0, target_modules=["lin"], scaling=convention)
    ours_model = _One(seed=3)
    ours = wrap_targets(ours_model, cfg, "grid")["lin"]
    with torch.no_grad():
        ours.lora_B.normal_(generator=torch.Generator().manual_seed(4))
    # GraLoRA's scaling is alpha / r with r = K r_b: ours under "block" (alpha / r_b) is GraLoRA with K alpha
    g_alpha = alpha if convention == "global" else alpha * k
    peft_model = get_peft_model(_One(seed=3), GraloraConfig(r=r, gralora_k=k, hybrid_r=0, alpha=g_alpha,
                                                            target_modules=["lin"]))
    g = peft_model.base_model.model.lin
    r_b, n_in, n_out = r // k, 32 // k, 48 // k
    with torch.no_grad():
        # ours A[i, j] (r_b x n/K) -> gralora_A[j][:, i*r_b:(i+1)*r_b] (input block j, rank groups by output block i)
        g.gralora_A["default"].copy_(ours.lora_A.permute(1, 3, 0, 2).reshape(k, n_in, k * r_b))
        # ours B[i, j] (m/K x r_b) -> gralora_B[i][j*r_b:(j+1)*r_b, :]
        g.gralora_B["default"].copy_(ours.lora_B.permute(0, 1, 3, 2).reshape(k, k * r_b, n_out))
    x = _x()
    torch.testing.assert_close(ours(x), peft_model(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.delta_weight(), g.get_delta_weight("default"), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("structure", ["grid", "diagonal"])
def test_one_block_is_lora(structure):
    from peft import LoraConfig, get_peft_model

    r, alpha = 4, 8.0
    cfg = LocalizedLoraConfig(r=r, num_blocks=1, alpha=alpha, dropout=0.0, target_modules=["lin"])
    ours = wrap_targets(_One(seed=5), cfg, structure)["lin"]
    with torch.no_grad():
        ours.lora_B.normal_(generator=torch.Generator().manual_seed(6))
    peft_model = get_peft_model(_One(seed=5), LoraConfig(r=r, lora_alpha=alpha, target_modules=["lin"]))
    lin = peft_model.base_model.model.lin
    with torch.no_grad():
        lin.lora_A["default"].weight.copy_(ours.lora_A.reshape(r, 32))
        lin.lora_B["default"].weight.copy_(ours.lora_B.reshape(48, r))
    x = _x()
    torch.testing.assert_close(ours(x), peft_model(x), rtol=1e-5, atol=1e-5)


def test_diagonal_delta_is_block_diagonal():
    layer = _layer("diagonal", k=4, r_b=3)
    dw = layer.delta_weight().detach().reshape(4, 12, 4, 8).permute(0, 2, 1, 3)  # (i, j, m/K, n/K)
    for i in range(4):
        for j in range(4):
            norm = float(dw[i, j].norm())
            assert (norm > 1e-3) if i == j else (norm == 0.0)


def test_grid_delta_has_rank_up_to_k_times_block_rank():
    layer = _layer("grid", k=4, r_b=2)
    assert int(torch.linalg.matrix_rank(layer.delta_weight())) == min(32, 4 * 4 * 2) == 32
    assert int(torch.linalg.matrix_rank(layer.lora_B[1, 2] @ layer.lora_A[1, 2])) == 2


def test_scaling_conventions():
    spec = registry.get("localized-lora")
    model, _ = load_model("tiny-llama")
    cfg = spec.default_config()
    assert (cfg.r, cfg.num_blocks, cfg.alpha) == (32, 4, 64.0)
    assert spec.adapt(model, cfg, TrainContext()).record()["scaling"] == pytest.approx(64 / 32)
    cfg.scaling = "block"
    assert spec.adapt(load_model("tiny-llama")[0], cfg, TrainContext()).record()["scaling"] == pytest.approx(64 / 8)


def test_blocks_must_divide_every_target():
    spec = registry.get("localized-lora")
    cfg = spec.default_config()
    cfg.num_blocks, cfg.r = 3, 33
    with pytest.raises(ValueError, match=r"K=3 must divide .*k_proj \(32x64\)"):
        spec.adapt(load_model("tiny-llama")[0], cfg, TrainContext())
    cfg.num_blocks, cfg.r = 4, 30
    with pytest.raises(ValueError, match="r divisible by num_blocks"):
        spec.adapt(load_model("tiny-llama")[0], cfg, TrainContext())


def test_synth_closed_forms_and_fits(tmp_path):
    from methods.localized_lora.synth import best_error, main

    m = torch.block_diag(torch.ones(8, 8), 2 * torch.ones(8, 8))  # two rank-1 diagonal blocks, energy 64 + 256
    assert best_error(m, "diagonal", 1, 2) == pytest.approx(0.0, abs=1e-12)
    assert best_error(m, "global", 1, 2) == pytest.approx(64 / 320)  # keeps the larger block only
    assert best_error(m, "localized", 2, 2) == pytest.approx(0.0, abs=1e-12)  # r_b = 1 per block
    table = main(tmp_path, size=64, num_blocks=4, ranks=(8,), steps=200, seed=1)
    assert {p.name for p in tmp_path.iterdir()} == {"synth.csv", "synth.md", "synth.png", "synth.svg"}
    assert len(table) == 4 * 3 and (table["params"] == 8 * 128).all()
    assert (table["gap"] >= -1e-9).all() and (table["gap"] < 0.02).all()
    winners = table.loc[table.groupby("target")["reached_rel_err"].idxmin()].set_index("target")["structure"]
    assert winners.to_dict() == {"block-lowrank": "localized", "block-diagonal": "diagonal",
                                 "global-lowrank": "global", "decaying": "global"}
