"""The registry contract, checked for every registered method on a tiny random model."""
from __future__ import annotations

import pytest
import torch

from harness.models import load_model
from methods import registry
from methods.base import Adapted, TrainContext

GENERIC = ["peft:vera", "peft:ia3", "peft:gralora"]
# KaSA truncates r singular values of each weight: its r=32 needs layers wider than tiny-llama's
# 32-wide v_proj (test_kasa_default_is_refused_on_tiny_llama)
TINY = {"kasa": {"r": 16}}


def _config(spec):
    cfg = spec.default_config()
    for key, value in TINY.get(spec.name, {}).items():
        setattr(cfg, key, value)
    return cfg


def _batch(vocab: int = 512, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (2, 12), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}


def _one_step(adapted: Adapted, step: int = 0) -> float:
    adapted.before_step(step)
    loss = adapted.model(**_batch(seed=step)).loss
    loss.backward()
    adapted.clip_gradients(1.0)
    adapted.optimizer.step()
    adapted.scheduler.step()
    adapted.after_step(step)
    adapted.zero_grad()
    return float(loss)


@pytest.mark.parametrize("name", registry.names() + GENERIC)
def test_every_method_honours_the_contract(name):
    spec = registry.get(name)
    assert spec.name == name and spec.description
    model, _ = load_model("tiny-llama")
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    ctx = TrainContext(lr=1e-2, total_steps=4, warmup_steps=1,
                       calibration_batches=lambda: iter([_batch(seed=100 + i) for i in range(8)]))
    adapted = spec.adapt(model, _config(spec), ctx)
    assert isinstance(adapted, Adapted)
    n = adapted.trainable_params()
    assert 0 < n <= sum(p.numel() for p in adapted.model.parameters())
    losses = [_one_step(adapted, s) for s in range(3)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert adapted.optimizer_state_bytes() > 0
    assert isinstance(adapted.record(), dict)
    # something the method trains has moved
    after = adapted.model.state_dict()
    moved = any(not torch.equal(v, after[k]) for k, v in before.items() if k in after) or any(
        k not in before for k in after)
    assert moved


@pytest.mark.parametrize("name", ["lora", "dora", "pissa", "adalora", "hira", "shira", "miss", "rslora", "vera",
                                  "supertuning", "kasa"] + GENERIC)
def test_trainable_params_match_peft(name):
    spec = registry.get(name)
    model, _ = load_model("tiny-llama")
    adapted = spec.adapt(model, _config(spec), TrainContext(total_steps=20))
    trainable, _total = adapted.model.get_nb_trainable_parameters()
    assert adapted.trainable_params() == trainable


def test_lora_count_by_hand():
    """LoRA r=32 on all seven projections of the 2-layer tiny model: r * (d_in + d_out) each."""
    spec = registry.get("lora")
    model, _ = load_model("tiny-llama")
    adapted = spec.adapt(model, spec.default_config(), TrainContext())
    h, i, kv = 64, 128, 2 * 16  # hidden, intermediate, kv heads x head_dim
    per_layer = 32 * ((h + h) * 2 + (h + kv) * 2 + (h + i) * 2 + (i + h))
    assert adapted.trainable_params() == 2 * per_layer


def test_full_trains_everything_once():
    model, _ = load_model("tiny-llama")
    adapted = registry.get("full").adapt(model, registry.get("full").default_config(), TrainContext())
    assert adapted.trainable_params() == sum(p.numel() for p in model.parameters())


def test_adalora_budget_update_runs_through_the_uniform_hook(monkeypatch):
    spec = registry.get("adalora")
    model, _ = load_model("tiny-llama")
    adapted = spec.adapt(model, spec.default_config(), TrainContext(total_steps=20))
    calls = []
    monkeypatch.setattr(adapted.model.base_model, "update_and_allocate", lambda step: calls.append(step))
    for s in range(3):
        _one_step(adapted, s)
    assert calls == [0, 1, 2]


def test_unknown_method_lists_valid_names():
    with pytest.raises(KeyError, match="valid: .*lora"):
        registry.get("nosuch")
    with pytest.raises(KeyError, match="vera"):
        registry.get("peft:nosuch")


# one value per method that its own config or its pre-run model check refuses; a new method
# needs a line here (the test below fails until it has one)
BAD_VALUES = {
    "full": "full.lr_scale=2",  # full has no settings: any key is unknown
    "lora": "lora.layers_pattern=layers",  # peft's own check (layers_to_transform missing)
    "dora": "dora.target_modules=nosuch",
    "pissa": "pissa.layers_pattern=layers",
    "adalora": "adalora.target_modules=nosuch",
    "losia": "losia.rank_factor=2",
    "losia-pro": "losia-pro.target_modules=nosuch",
    "galore": "galore.proj_type=sideways",
    "localized-lora": "localized-lora.r=30",  # not divisible by num_blocks=4
    "localized-lora-diag": "localized-lora-diag.scaling=blockwise",
    "sensitivity-lora": "sensitivity-lora.beta=2",
    "hira": "hira.r=0",
    "shira": "shira.r=0",
    "miss": "miss.mini_r=-1",
    "rslora": "rslora.r=0",
    "vera": "vera.r=0",
    "supertuning": "supertuning.sparsity=1.0",
    "kasa": "kasa.lora_alpha=0",
    "peft:vera": "peft:vera.r=0",
    "peft:ia3": "peft:ia3.target_modules=nosuch",
    "peft:gralora": "peft:gralora.gralora_k=0",  # peft: a positive integer
}


def test_every_method_has_a_bad_value_case():
    assert set(registry.names()) | set(GENERIC) <= set(BAD_VALUES)


@pytest.mark.parametrize("name", sorted(BAD_VALUES))
def test_a_bad_method_value_is_one_line_exit_2_before_anything_runs(name, tmp_path, capsys):
    from harness import cli

    out = tmp_path / "out"
    code = cli.main(["run", "--model", "tiny-llama", "--tasks", "synthetic", "--methods", name, "--max-steps", "1",
                     "--set", BAD_VALUES[name], "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("bench: error:") and name in err[0], err
    assert not out.exists()  # refused while planning: no run folder, no results table


@pytest.mark.parametrize("name, values", [
    ("galore", {"rank": 0}), ("galore", {"proj_type": "sideways"}), ("localized-lora", {"scaling": "blockwise"}),
    ("localized-lora", {"num_blocks": 0}), ("sensitivity-lora", {"estimator": "guess"}),
    ("sensitivity-lora", {"topk_fraction": 0.0}), ("sensitivity-lora", {"r_min": 4, "r_max": 2}),
    ("lora", {"layers_pattern": "layers"}), ("peft:vera", {"layers_pattern": "layers"}), ("peft:gralora", {"r": 31}),
])
def test_method_configs_refuse_bad_values_with_method_config_error(name, values):
    from methods.base import MethodConfigError

    with pytest.raises(MethodConfigError):
        registry.get(name).config_cls(**values)


def test_kasa_default_is_refused_on_tiny_llama():
    from methods.base import MethodConfigError

    spec = registry.get("kasa")
    model, _ = load_model("tiny-llama")
    with pytest.raises(MethodConfigError, match=r"r=32 must be below min\(d_in, d_out\) = 32 of .*v_proj"):
        spec.check_model(model, spec.default_config())


def test_shira_fits_its_rank_to_a_small_model_and_records_it():
    spec = registry.get("shira")
    model, _ = load_model("tiny-llama")
    with pytest.warns(UserWarning, match="r=32 exceeds"):
        adapted = spec.adapt(model, spec.default_config(), TrainContext())
    assert adapted.record()["r_requested"] == 32
    assert adapted.record()["r_used"] == 64 * 32 // (64 + 32) == adapted.model.peft_config["default"].r


@pytest.mark.parametrize("name,key,value", [("hira", "r", 0), ("miss", "mini_r", -1), ("rslora", "r", "8"),
                                            ("supertuning", "sparsity", 1.0), ("kasa", "lora_alpha", 0)])
def test_leaders_refuse_bad_values_before_training(name, key, value):
    from methods.base import MethodConfigError

    spec = registry.get(name)
    cfg = spec.default_config()
    setattr(cfg, key, value)
    model, _ = load_model("tiny-llama")
    with pytest.raises(MethodConfigError, match=key):
        spec.check_model(model, cfg)
