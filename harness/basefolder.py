"""The base model as the Hugging Face libraries load it: what a saved adapter names.

A hub id or a folder is already such a name. A built-in model is not (``smollm2-135m`` is our
conversion of a GGUF file, ``tiny-llama`` is built in code), so it is written once as a standard
transformers folder (config, safetensors, tokenizer) in the model cache and named by that path;
``bench export-base NAME --out DIR`` copies it anywhere. ``bench eval`` maps such a folder back to
its built-in name, so it loads the base as the run did.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from harness.safe_io import share
from harness.models import (DEFAULT_MODEL, EXPORTED_RANDOM, ModelError, build_llama, cache_dir, model_info,
                            smollm2_dir)


def byte_tokenizer_fast(vocab_size: int, model_max_length: int) -> Any:
    """``ByteTokenizer`` as a transformers tokenizer (same ids: UTF-8 bytes + 3, no specials added),
    so an exported random model loads with ``AutoTokenizer`` (lm-eval, AutoPeftModel)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    alphabet = _byte_alphabet()
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, **{alphabet[b]: b + 3 for b in range(256)}}
    vocab.update({f"<unused{i}>": i for i in range(259, vocab_size)})
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = byte_level
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   model_max_length=model_max_length)


def _byte_alphabet() -> dict[int, str]:
    """Byte -> the character the byte-level pre-tokenizer maps it to (GPT-2's printable remapping:
    printable Latin-1 bytes are themselves, the others 256, 257, ... in order)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return {**{b: chr(b) for b in printable}, **{b: chr(256 + i) for i, b in enumerate(others)}}


def export_base(name: str, out: Path | None = None) -> Path:
    """A standard transformers folder (config, safetensors, tokenizer) of built-in model ``name``:
    its cache folder (``out`` None), or a copy in ``out``. What ``base_model_name_or_path`` names."""
    if name == DEFAULT_MODEL:
        folder = smollm2_dir()
    elif name in EXPORTED_RANDOM:
        folder = _random_dir(name)
    else:
        raise ModelError(f"export-base {name}: takes a built-in model ({DEFAULT_MODEL}, "
                         f"{', '.join(EXPORTED_RANDOM)}); a hub id or folder loads as it is")
    if out is None:
        try:
            share(folder)  # a cache written before folders were shared was 0700
        except PermissionError:  # another user's cache: theirs to open up
            pass
        return folder
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise ModelError(f"--out {out}: exists and is not empty; give a new folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(folder, out, dirs_exist_ok=True)
    share(out)
    return out


def _random_dir(name: str) -> Path:
    """The cached folder of a built-in random model (seed 0, as every run loads it), written once."""
    target = cache_dir() / name
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    config = EXPORTED_RANDOM[name]
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        build_llama(config).save_pretrained(tmp)
        byte_tokenizer_fast(config["vocab_size"], config["max_position_embeddings"]).save_pretrained(tmp)
        share(tmp)
        os.replace(tmp, target)
    except OSError:  # another process wrote it first
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / "config.json").exists():
            raise
    return target


def hf_base(name: str) -> str:
    """What an adapter names as its base: a name the Hugging Face libraries load. A hub id stays;
    a folder becomes absolute; a built-in model becomes its exported folder (``export_base``)."""
    if name == DEFAULT_MODEL or name in EXPORTED_RANDOM:
        return str(export_base(name))
    if Path(name).is_dir():
        return str(Path(name).resolve())
    return name  # a hub id (the revision goes beside it), or smollm2-shapes (random, 0.5 GB: not written)


def card_facts(name: str) -> dict[str, str]:
    """What a saved folder's model card says about the base (``export.model_card``)."""
    info = model_info(name)
    facts = {"note": info.note, "hub_id": info.hub_id}
    if name == DEFAULT_MODEL or name in EXPORTED_RANDOM:
        facts["export"] = (f"The base is peft-bench's exported `{name}` folder; on another machine write it with "
                           f"`bench export-base {name} --out BASE` and load with `pretrained=BASE`.")
    return facts
