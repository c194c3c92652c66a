"""--set parsing, presets, run ids, the trainer / evaluation split and the method context."""
from __future__ import annotations

import pytest

from harness.config import (EVAL_KEYS, ConfigError, EvalConfig, RunConfig, TrainConfig, build_configs,
                            config_to_dict, method_context, parse_value, run_config_from_dict)
from methods import registry


def test_parse_value_follows_default_types():
    assert parse_value("3e-4", 2e-4) == pytest.approx(3e-4)
    assert parse_value("16", 8) == 16 and isinstance(parse_value("16", 8), int)
    assert parse_value("2", 0.5) == 2.0 and isinstance(parse_value("2", 0.5), float)
    assert parse_value("false", True) is False
    assert parse_value("q_proj,v_proj", ["x"]) == ["q_proj", "v_proj"]
    with pytest.raises(ConfigError):
        parse_value("abc", 1)


def test_overrides_reach_method_and_trainer():
    spec = registry.get("lora")
    cfg, train, evaluation = build_configs(spec, {"lora.r": "16", "lr": "3e-4", "trainer.batch_size": "4",
                                                  "eval_limit": "7", "trainer.num_beams": "2"}, None, TrainConfig())
    assert cfg.r == 16 and train.lr == pytest.approx(3e-4) and train.batch_size == 4
    assert evaluation == EvalConfig(eval_limit=7, num_beams=2)
    assert spec.default_config().r == 32  # defaults untouched


def test_unknown_keys_list_valid_ones():
    spec = registry.get("lora")
    with pytest.raises(ConfigError, match="valid keys: .*lora_alpha"):
        build_configs(spec, {"lora.nosuch": "1"}, None, TrainConfig())
    with pytest.raises(ConfigError, match="valid: .*batch_size"):
        build_configs(spec, {"nosuch": "1"}, None, TrainConfig())


def test_bad_values_name_the_key_and_its_default():
    spec = registry.get("lora")
    with pytest.raises(ConfigError, match=r"^'r' of method 'lora' \(--set\): expected a number, got 'abc' \(default: 32\)$"):
        build_configs(spec, {"lora.r": "abc"}, None, TrainConfig())
    with pytest.raises(ConfigError, match=r"^'grad_clip' of the trainer .*expected a number.*default: 1.0\)$"):
        build_configs(spec, {"grad_clip": "high"}, None, TrainConfig())


def test_preset_then_set_precedence():
    spec = registry.get("lora")
    _, train, _ = build_configs(spec, {}, "paper", TrainConfig())
    assert train.batch_size == 16
    _, train, _ = build_configs(spec, {"batch_size": "2"}, "paper", TrainConfig())
    assert train.batch_size == 2
    with pytest.raises(ConfigError, match="no preset"):
        build_configs(spec, {}, "nosuch", TrainConfig())


def test_run_id_is_a_function_of_the_resolved_config():
    spec = registry.get("lora")
    cfg, train, _ = build_configs(spec, {}, None, TrainConfig())
    make = lambda **kw: RunConfig(model="tiny-llama", method="lora", method_config=config_to_dict(cfg),  # noqa: E731
                                  train_tasks=("synthetic",), eval_tasks=("synthetic",), train=train, **kw)
    assert make().run_id == make().run_id
    assert make(seed=1).run_id != make().run_id
    cfg16, _, _ = build_configs(spec, {"lora.r": "16"}, None, TrainConfig())
    other = RunConfig(model="tiny-llama", method="lora", method_config=config_to_dict(cfg16),
                      train_tasks=("synthetic",), eval_tasks=("synthetic",), train=train)
    assert other.run_id != make().run_id


def test_steps_from_epochs():
    t = TrainConfig(max_steps=0, epochs=2, batch_size=8)
    assert t.resolved_steps(100) == 25
    assert t.resolved_warmup(25) == 2
    with pytest.raises(ConfigError):
        TrainConfig(max_steps=0, epochs=0).resolved_steps(10)


def test_evaluation_settings_keep_the_record_form_and_run_ids_of_before_the_split():
    cfg = RunConfig(model="tiny-llama", method="lora", method_config={}, train_tasks=("synthetic",),
                    eval_tasks=("synthetic",), train=TrainConfig(max_steps=200),  # the default then
                    eval=EvalConfig(eval_limit=12, num_beams=2))
    # the id this run had when TrainConfig still carried the evaluation keys: finished runs stay found
    assert cfg.run_id == "tiny-llama__lora__synthetic__s0__8c64ec8dd7"
    train = cfg.resolved()["train"]
    assert train["eval_limit"] == 12 and train["lr"] == TrainConfig().lr and set(EVAL_KEYS) < set(train)
    again = run_config_from_dict(cfg.resolved())
    assert again == cfg and again.run_id == cfg.run_id


def test_the_method_context_comes_from_the_trainer_settings():
    train = TrainConfig(lr=1e-3, weight_decay=0.1, warmup_ratio=0.25, min_lr_ratio=0.5, grad_clip=0)
    ctx = method_context(train, total_steps=40, seed=3, device="cpu")
    assert (ctx.lr, ctx.weight_decay, ctx.warmup_steps, ctx.total_steps, ctx.min_lr_ratio) == (1e-3, 0.1, 10, 40, 0.5)
    assert ctx.grad_clip is None and ctx.seed == 3 and ctx.device == "cpu"  # clipping 0 = off
    assert method_context(TrainConfig(warmup_steps=7), 40, 0, "cpu").warmup_steps == 7
