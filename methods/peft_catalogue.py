"""What ``peft:<type>`` means for each tuner the installed peft registers.

peft's own defaults for some tuners cannot build a causal LM adapter (prompt-learning types leave
``num_virtual_tokens`` unset; block sizes larger than a small model's layers). ``CAUSAL_LM_DEFAULTS``
holds the few values that make each one a sane causal LM default: they apply to every model whose
layer widths are multiples of 32 (tiny-llama, SmolLM2, Llama). ``PEFT_PICKS_TARGETS`` are tuners
whose targets are not linear layers, so their ``target_modules=None`` is left to peft's own mapping.
``UNSUPPORTED`` names the tuners the uniform driver cannot train, with peft's reason.

``peft_tuners_tested.json`` is the list ``tests/test_peft_walk.py`` proves (adapt, train, evaluate,
save, reload, re-score identically) together with the peft version it was proved with;
``bench list methods`` prints it.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TESTED_FILE = Path(__file__).with_name("peft_tuners_tested.json")

VIRTUAL_TOKENS = 20  # prompt/prefix tuning papers' common setting (Lester et al.; Li & Liang use 10-200)

CAUSAL_LM_DEFAULTS: dict[str, dict[str, Any]] = {
    "PROMPT_TUNING": {"num_virtual_tokens": VIRTUAL_TOKENS},
    "PREFIX_TUNING": {"num_virtual_tokens": VIRTUAL_TOKENS},
    "P_TUNING": {"num_virtual_tokens": VIRTUAL_TOKENS},
    "CARTRIDGE": {"num_virtual_tokens": VIRTUAL_TOKENS},
    "MULTITASK_PROMPT_TUNING": {"num_virtual_tokens": VIRTUAL_TOKENS},
    "ADAPTION_PROMPT": {"adapter_len": 10},  # LLaMA-Adapter's prompt length; adapter_layers: all layers
    "C3A": {"block_size": 32},  # peft's 256 must divide every targeted width
    "ROAD": {"group_size": 32},  # peft's 64 must divide every targeted output width
    "VBLORA": {"vector_length": 32},  # peft's 256 must divide every targeted width
    "WAVEFT": {"n_frequency": 1024},  # peft's 2592 exceeds a small layer's d_in x d_out
    "SHIRA": {"r": 16},  # r * (d_in + d_out) must stay below d_in x d_out on every targeted layer
    "TRAINABLE_TOKENS": {"token_indices": [0, 1, 2]},  # the special tokens (bos/eos/chat markers)
}

PEFT_PICKS_TARGETS = frozenset({"ADAPTION_PROMPT", "LN_TUNING", "SHADOW", "TRAINABLE_TOKENS"})

# type -> (why the uniform driver cannot train it, text the failure shows when tried anyway)
UNSUPPORTED: dict[str, tuple[str, str]] = {
    "POLY": ("routes each example by task id: every forward needs task_ids, which a plain causal LM "
             "batch does not carry", "task_ids should not be None"),
    "MULTITASK_PROMPT_TUNING": ("one prompt per task: every forward needs task_ids, which a plain causal "
                                "LM batch does not carry", "task_ids cannot be None"),
    "XLORA": ("mixes already-trained LoRA adapters: its config needs `adapters` (paths of trained LoRAs) "
              "and the model's use_cache=False", "use_cache"),
    "CPT": ("context-aware prompt tuning needs the few-shot context's token ids and type masks "
            "(cpt_token_ids, cpt_mask, cpt_tokens_type_mask) and an input_type_mask in every batch; "
            "without them the loss is not finite", "loss is not finite"),
}


def tested() -> dict[str, Any]:
    """The committed walk result: ``{"peft": version, "tested": [types]}`` (empty when absent)."""
    try:
        return json.loads(TESTED_FILE.read_text())
    except (OSError, ValueError):
        return {}


def status_lines(installed: str, types: list[str]) -> list[str]:
    """One line per peft type for ``bench list methods``: tested (with the version), or why not."""
    proved = tested()
    same = proved.get("peft") == installed
    lines = []
    for key in sorted(types):
        if key in UNSUPPORTED:
            state = f"unsupported: {UNSUPPORTED[key][0]}"
        elif same and key in proved.get("tested", []):
            state = f"tested with peft {installed}"
        elif key in proved.get("tested", []):
            state = f"untested with peft {installed} (tested with peft {proved.get('peft')})"
        else:
            state = f"untested with peft {installed}"
        lines.append(f"peft:{key.lower():<24} {state}")
    return lines
