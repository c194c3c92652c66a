"""Apply a weight delta saved by peft-bench (``--save adapter`` of LoSiA, full fine-tuning, GaLore,
Localized LoRA) to a model of its base; needs only torch and safetensors, never peft-bench.

A copy of this file is saved in every delta folder, so a delta is used without the project::

    from transformers import AutoModelForCausalLM
    from load_delta import load_delta          # this file, from the saved folder
    model = load_delta(AutoModelForCausalLM.from_pretrained(BASE), DELTA_DIR)

``delta.safetensors`` holds the trained values of the changed weights only: a whole tensor
under its parameter name, or, for a 2-D weight whose changes lie in a few rows and columns,
``NAME::rows``, ``NAME::cols`` and ``NAME::block`` (``W[rows][:, cols]`` after training).
"""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

WEIGHTS = "delta.safetensors"


def load_delta(model: torch.nn.Module, folder: str | Path) -> torch.nn.Module:
    """Write the delta in ``folder`` into ``model``'s weights in place and return the model."""
    tensors = load_file(str(Path(folder) / WEIGHTS))
    params = dict(model.named_parameters())
    with torch.no_grad():
        for key, value in tensors.items():
            name, _, part = key.partition("::")
            if name not in params:
                raise ValueError(f"{folder}: weight {name} is not in the model; was the delta saved for another base?")
            weight = params[name]
            if not part:
                weight.copy_(value)
            elif part == "block":
                rows = tensors[f"{name}::rows"].to(weight.device).unsqueeze(1)
                cols = tensors[f"{name}::cols"].to(weight.device).unsqueeze(0)
                weight[rows, cols] = value.to(weight.device, weight.dtype)
    return model
