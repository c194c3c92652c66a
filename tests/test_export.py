"""Saving what a run trained (peft folder, weight delta, merged folder) and loading it back."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from harness import export
from harness.models import ModelError, load_model, resolve_model
from methods import registry
from methods.base import Adapted, TrainContext


def _batch(seed: int) -> dict[str, torch.Tensor]:
    ids = torch.randint(3, 512, (2, 12), generator=torch.Generator().manual_seed(seed))
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids}


def _trained(name: str, steps: int = 4, **overrides) -> tuple[Adapted, torch.Tensor]:
    """A tiny-llama adapted by ``name`` and trained a few steps; plus its eval logits on a probe."""
    spec = registry.get(name)
    model, _ = load_model("tiny-llama")
    cfg = dataclasses.replace(spec.default_config(), **overrides)
    adapted = spec.adapt(model, cfg, TrainContext(lr=1e-2, total_steps=steps))
    for step in range(steps):
        adapted.before_step(step)
        adapted.model(**_batch(step)).loss.backward()
        adapted.optimizer.step()
        adapted.scheduler.step()
        adapted.after_step(step)
        adapted.zero_grad()
    return adapted, _logits(adapted.for_eval())


def _logits(model: torch.nn.Module) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(input_ids=_batch(99)["input_ids"]).logits


def _save(adapted: Adapted, kind: str, tmp_path) -> dict:
    base = lambda: load_model("tiny-llama")[0]  # noqa: E731
    return export.save_trained(adapted, kind, tmp_path / kind, "tiny-llama", None, base,
                               {"run_id": "r1", "method": "m"})


def test_peft_adapter_is_peft_folder_and_reloads_exactly(tmp_path):
    from peft import PeftModel

    adapted, logits = _trained("lora")
    saved = _save(adapted, "adapter", tmp_path)
    assert saved["format"] == "peft" and saved["bytes"] > 0
    folder = tmp_path / "adapter"
    assert json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"] == "tiny-llama"
    assert torch.equal(_logits(PeftModel.from_pretrained(load_model("tiny-llama")[0], folder)), logits)
    # --model DIR resolves the base from adapter_config.json; --model BASE --adapter DIR loads the same
    assert resolve_model(str(folder)) == ("tiny-llama", str(folder))
    assert torch.equal(_logits(load_model("tiny-llama", adapter=str(folder))[0]), logits)


@pytest.mark.parametrize("name", ["losia", "losia-pro"])
def test_losia_delta_holds_blocks_plus_dense_rest_and_reapplies_exactly(tmp_path, name):
    adapted, logits = _trained(name, steps=6, period=2)  # re-localized twice: the blocks moved
    trained = {k: v.detach().clone() for k, v in adapted.model.named_parameters()}
    saved = _save(adapted, "adapter", tmp_path)
    assert saved["format"] == "delta"
    kinds = json.loads((tmp_path / "adapter" / export.DELTA_CONFIG).read_text())["tensors"]
    assert kinds["model.layers.0.self_attn.q_proj.weight"] == "block"
    assert kinds["model.norm.weight"] == "full"  # dense_rest trains norms and embeddings densely
    full_size = sum(v.numel() * v.element_size() for v in trained.values())
    assert saved["bytes"] < full_size
    model = load_model("tiny-llama", adapter=str(tmp_path / "adapter"))[0]
    assert all(torch.equal(p, trained[k]) for k, p in model.named_parameters())
    assert torch.equal(_logits(model), logits)
    assert resolve_model(str(tmp_path / "adapter")) == ("tiny-llama", str(tmp_path / "adapter"))


def test_full_delta_is_whole_tensors_and_merged_is_a_transformers_folder(tmp_path):
    from transformers import AutoModelForCausalLM

    adapted, logits = _trained("full")
    assert _save(adapted, "adapter", tmp_path)["format"] == "delta"
    kinds = json.loads((tmp_path / "adapter" / export.DELTA_CONFIG).read_text())["tensors"]
    assert kinds["model.layers.0.self_attn.q_proj.weight"] == "full"
    assert kinds["model.embed_tokens.weight"] == "block"  # only the rows of tokens it saw moved
    assert torch.equal(_logits(load_model("tiny-llama", adapter=str(tmp_path / "adapter"))[0]), logits)
    assert _save(adapted, "merged", tmp_path)["format"] == "transformers"
    assert torch.equal(_logits(AutoModelForCausalLM.from_pretrained(tmp_path / "merged")), logits)


def test_merged_peft_and_localized_fold_their_adapters(tmp_path):
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    for name in ("lora", "localized-lora"):
        adapted, logits = _trained(name)
        _save(adapted, "merged", tmp_path)
        with safe_open(str(tmp_path / "merged" / "model.safetensors"), "pt") as fh:
            assert not [k for k in fh.keys() if "lora" in k or "base_layer" in k]
        reloaded = _logits(AutoModelForCausalLM.from_pretrained(tmp_path / "merged"))
        torch.testing.assert_close(reloaded, logits, rtol=1e-4, atol=1e-4)  # merging rounds differently


def test_none_saves_nothing_and_bad_folders_are_one_line(tmp_path):
    adapted, _ = _trained("lora", steps=1)
    assert _save(adapted, "none", tmp_path) == {"kind": "none"}
    assert not (tmp_path / "none").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="not a peft adapter folder"):
        resolve_model("tiny-llama", str(tmp_path / "empty"))
    (tmp_path / "nobase").mkdir()
    (tmp_path / "nobase" / "adapter_config.json").write_text("{}")
    with pytest.raises(ModelError, match="names no base model"):
        resolve_model(str(tmp_path / "nobase"))


def test_a_delta_for_another_base_is_refused(tmp_path):
    adapted, _ = _trained("full", steps=1)
    _save(adapted, "adapter", tmp_path)
    cfg = tmp_path / "adapter" / export.DELTA_CONFIG
    doc = json.loads(cfg.read_text())
    doc["tensors"] = {"model.not_there.weight": "full"}
    cfg.write_text(json.dumps(doc))
    with pytest.raises(ModelError, match="not in the model"):
        load_model("tiny-llama", adapter=str(tmp_path / "adapter"))


def test_export_base_writes_a_standard_folder_and_refuses_a_full_one(tmp_path, monkeypatch, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness import cli
    from harness.models import ByteTokenizer

    monkeypatch.setenv("PEFT_BENCH_CACHE", str(tmp_path / "cache"))
    assert cli.main(["export-base", "tiny-llama", "--out", str(tmp_path / "base")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "base")
    model, tok = AutoModelForCausalLM.from_pretrained(tmp_path / "base"), AutoTokenizer.from_pretrained(tmp_path / "base")
    assert torch.equal(_logits(model), _logits(load_model("tiny-llama")[0]))
    text = "Question: which? Answer: é 日本"
    assert tok(text, add_special_tokens=False)["input_ids"] == ByteTokenizer().encode(text)
    assert cli.main(["export-base", "tiny-llama", "--out", str(tmp_path / "base")]) == 2
    assert "not empty" in capsys.readouterr().err
    assert cli.main(["export-base", "some/hub-id"]) == 2
