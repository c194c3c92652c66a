"""Saving what a run trained, and applying it to a base model again.

Three ways to save (``--save``), the same for every method:

* ``adapter``: a peft model saves with peft's own ``save_pretrained`` (a folder that
  ``PeftModel.from_pretrained`` and lm-eval's ``peft=`` load). Any other method saves a *weight
  delta*: only the base weights that changed, as safetensors. It is found by comparing the
  trained model (``Adapted.merged_model()``) with a fresh copy of the base, parameter by
  parameter, so no method needs saving code and nothing is copied while training runs (a copy
  of the base would count in the run's memory figures). A changed 2-D weight whose changes lie
  in a few rows and columns (LoSiA's blocks, however often they moved) is stored as
  ``(rows, cols, W[rows][:, cols])``; any other changed weight (LoSiA's densely trained rest, full
  fine-tuning, GaLore) as the whole tensor. ``load_delta.py`` (torch and safetensors only) is
  saved beside it: one call applies it outside the project.
* ``merged``: a plain transformers folder (``from_pretrained`` loads it, lm-eval's
  ``--model hf --model_args pretrained=DIR`` scores it).
* ``none``: nothing.

Every folder names its base as the Hugging Face libraries load it (``models.hf_base``), holds a
model card (README.md) saying how to load it, is readable as the umask allows, and is written
under a temporary name and renamed into place.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # the parser reads SAVE_KINDS: this module must not import torch (bench --help)
    import torch
    from torch import nn

    from methods.base import Adapted

from harness import safe_io

SAVE_KINDS = ("adapter", "merged", "none")
DEFAULT_SAVE = "adapter"
DELTA_FORMAT = "peft-bench-delta"
DELTA_VERSION = 1
DELTA_CONFIG = "delta_config.json"
DELTA_LOADER = Path(__file__).with_name("load_delta.py")  # standalone: copied into every delta folder
PEFT_CONFIG = "adapter_config.json"
MODEL_CARD = "README.md"


def _is_peft(model: nn.Module) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def compute_delta(trained: nn.Module, base: nn.Module) -> dict[str, torch.Tensor]:
    """The safetensors entries that turn ``base`` into ``trained``: changed parameters only.

    A 2-D weight is stored as a block when its changed entries fit in a rows x cols submatrix
    smaller than half the weight (the rows of the tokens seen of an untied embedding, LoSiA's
    blocks); the block holds the trained values, so applying it is exact. A tied embedding is
    also the output layer, whose gradient reaches every row: trained, it is stored whole.
    """
    base_params = dict(base.named_parameters())
    out: dict[str, torch.Tensor] = {}
    for name, param in trained.named_parameters():
        if name not in base_params or base_params[name].shape != param.shape:
            raise ValueError(f"parameter {name} {tuple(param.shape)} has no counterpart in the base model; "
                             f"the method's merged_model() must return the base architecture")
        new, old = param.detach().cpu(), base_params[name].detach().cpu()
        changed = new != old
        if not changed.any():
            continue
        if new.dim() == 2:
            rows = changed.any(1).nonzero().flatten()
            cols = changed.any(0).nonzero().flatten()
            if 2 * rows.numel() * cols.numel() < new.numel():
                out.update({f"{name}::rows": rows, f"{name}::cols": cols,
                            f"{name}::block": new.index_select(0, rows).index_select(1, cols).contiguous()})
                continue
        out[name] = new.contiguous()
    return out


def apply_delta(model: nn.Module, folder: Path) -> nn.Module:
    """Write a saved delta into ``model``'s weights in place (the loader of ``bench eval --adapter``):
    the very function saved beside the delta for users outside the project."""
    from harness.load_delta import load_delta

    folder = Path(folder)
    meta = json.loads((folder / DELTA_CONFIG).read_text())
    if meta.get("format") != DELTA_FORMAT or meta.get("version") != DELTA_VERSION:
        raise ValueError(f"{folder}: not a {DELTA_FORMAT} v{DELTA_VERSION} folder")
    params = dict(model.named_parameters())
    missing = [name for name in meta["tensors"] if name not in params]
    if missing:
        raise ValueError(f"{folder}: weight {missing[0]} is not in the model; was the delta saved for another base?")
    return load_delta(model, folder)


def _write_delta(folder: Path, delta: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    from safetensors.torch import save_file

    from harness.load_delta import WEIGHTS

    kinds = {k.rsplit("::", 1)[0]: ("block" if "::" in k else "full") for k in delta}
    save_file(delta, str(folder / WEIGHTS), metadata={"format": DELTA_FORMAT})
    doc = {"format": DELTA_FORMAT, "version": DELTA_VERSION, **meta, "tensors": kinds}
    (folder / DELTA_CONFIG).write_text(json.dumps(doc, indent=2) + "\n")
    shutil.copyfile(DELTA_LOADER, folder / DELTA_LOADER.name)


def save_trained(adapted: Adapted, kind: str, target: Path, base_model: str, tokenizer: Any,
                 load_base: Callable[[], nn.Module], meta: dict[str, Any], card: dict[str, str] | None = None
                 ) -> dict[str, Any]:
    """Save the trained model as ``kind`` into the folder ``target``; return what was written.

    ``base_model`` is what the Hugging Face libraries load the base by (a hub id or a folder,
    ``models.hf_base``): peft's ``base_model_name_or_path``, the delta's ``base_model``. ``meta``
    (run id, method) goes into a delta's config; ``card`` (``models.card_facts``) into the model
    card. Call after the last evaluation: merging may change the model in place.
    """
    if kind not in SAVE_KINDS:
        raise ValueError(f"--save {kind!r}: valid: {', '.join(SAVE_KINDS)}")
    if kind == "none":
        return {"kind": "none"}
    target = Path(target)
    with safe_io.atomic(target, folder=True) as tmp:  # a rerun (--force) replaces what the last one saved
        fmt = _save_into(adapted, kind, tmp, base_model, tokenizer, load_base, meta)
        (tmp / MODEL_CARD).write_text(model_card(fmt, base_model, meta, card or {}), encoding="utf-8")
    size = sum(f.stat().st_size for f in target.rglob("*") if f.is_file())
    return {"kind": kind, "format": fmt, "path": str(target), "bytes": size, "base_model": base_model}


def _save_into(adapted: Adapted, kind: str, folder: Path, base_model: str, tokenizer: Any,
               load_base: Callable[[], nn.Module], meta: dict[str, Any]) -> str:
    if kind == "adapter" and _is_peft(adapted.model):
        adapted.model.save_pretrained(folder)
        # name the base as the Hugging Face libraries load it (AutoPeftModel, lm-eval's peft=); set
        # after saving, since peft's save looks the name up to check the embeddings
        config = adapted.model.peft_config[adapted.model.active_adapter]
        config.base_model_name_or_path = base_model
        config.revision = _hub_revision(adapted.model.get_base_model(), base_model)
        config.save_pretrained(str(folder))
        return "peft"
    merged = adapted.merged_model()
    if kind == "merged":
        merged.save_pretrained(folder)
        if hasattr(tokenizer, "save_pretrained"):  # built-in random models use a byte tokenizer
            tokenizer.save_pretrained(folder)
        return "transformers"
    _write_delta(folder, compute_delta(merged, load_base()),
                 {"base_model": base_model, "revision": _hub_revision(merged, base_model), **meta})
    return "delta"


def _hub_revision(model: nn.Module, base_model: str) -> str | None:
    """The commit of a base loaded from the hub (peft's ``revision``), so the adapter loads onto
    exactly that base; None for a local folder."""
    if Path(base_model).is_dir():
        return None
    return getattr(model.config, "_commit_hash", None)


def model_card(fmt: str, base_model: str, meta: dict[str, Any], card: dict[str, str]) -> str:
    """The folder's README.md: Hugging Face card metadata and how to load the folder outside bench."""
    lines = ["---"]
    if fmt == "peft":
        lines.append("library_name: peft")
    if card.get("hub_id"):  # the hub's base_model field takes hub ids only
        lines.append(f"base_model: {card['hub_id']}")
    lines += ["tags:", "- peft-bench", f"- {meta.get('method', 'unknown')}", "---", "",
              f"# {meta.get('method')} trained by peft-bench (run {meta.get('run_id')})", "",
              f"Base model: `{base_model}`" + (f" ({card['note']})" if card.get("note") else "") + ".", ""]
    if card.get("export"):
        lines += [card["export"], ""]
    lines += ["Load (DIR is this folder):", "", "```python"]
    if fmt == "peft":
        lines += ["from peft import AutoPeftModelForCausalLM", "",
                  'model = AutoPeftModelForCausalLM.from_pretrained("DIR")', "```", "",
                  f"lm-eval: `lm_eval --model hf --model_args pretrained={base_model},peft=DIR ...`"]
    elif fmt == "delta":
        lines += ["import sys", "from transformers import AutoModelForCausalLM", "",
                  'sys.path.insert(0, "DIR")  # load_delta.py, saved in this folder: needs torch and safetensors',
                  "from load_delta import load_delta", "",
                  f'model = load_delta(AutoModelForCausalLM.from_pretrained("{base_model}"), "DIR")', "```"]
    else:
        lines += ["from transformers import AutoModelForCausalLM", "",
                  'model = AutoModelForCausalLM.from_pretrained("DIR")', "```", "",
                  "lm-eval: `lm_eval --model hf --model_args pretrained=DIR ...`"]
    return "\n".join(lines) + "\n"


def adapter_format(folder: Path) -> str | None:
    """``peft`` for a peft adapter folder, ``delta`` for a saved weight delta, else None."""
    folder = Path(folder)
    if (folder / PEFT_CONFIG).is_file():
        return "peft"
    if (folder / DELTA_CONFIG).is_file():
        return "delta"
    return None


def adapter_base(folder: Path) -> str | None:
    """The base model an adapter folder names (peft's ``base_model_name_or_path``, or the delta's)."""
    fmt = adapter_format(folder)
    if fmt is None:
        return None
    doc = json.loads((Path(folder) / (PEFT_CONFIG if fmt == "peft" else DELTA_CONFIG)).read_text())
    return doc.get("base_model_name_or_path" if fmt == "peft" else "base_model")


def attach(model: nn.Module, folder: Path) -> nn.Module:
    """``model`` with the adapter folder applied: a ``PeftModel`` for peft, patched weights for a delta."""
    fmt = adapter_format(folder)
    if fmt == "peft":
        from peft import PeftModel

        return PeftModel.from_pretrained(model, str(folder))
    if fmt == "delta":
        return apply_delta(model, folder)
    raise ValueError(f"{folder} is neither a peft adapter ({PEFT_CONFIG}) nor a saved delta ({DELTA_CONFIG})")
