"""Turning (context, continuation) text into token ids, the same way for scoring and training.

The split follows lm-evaluation-harness's HFLM for causal models, so our per-choice scores
match lm-eval's and a model is trained on exactly the token boundary it is later scored on:
trailing whitespace of the context moves to the continuation, the continuation's tokens are
``enc(context + continuation)[len(enc(context)):]``, and special tokens are whatever the
tokenizer adds by default (HFLM with ``add_bos_token`` unset): none for SmolLM2 and the byte
tokenizer, a BOS for Llama-2-style tokenizers.
"""
from __future__ import annotations

from typing import Any

IGNORE_INDEX = -100


def encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer.encode(text))


def prefix_token_id(tokenizer: Any) -> int:
    """Conditioning token for an empty context (BOS, else EOS), as lm-eval uses."""
    bos = getattr(tokenizer, "bos_token_id", None)
    return bos if bos is not None else tokenizer.eos_token_id


def encode_pair(
    tokenizer: Any, context: str, continuation: str, cache: dict[str, list[int]] | None = None
) -> tuple[list[int], list[int]]:
    """Token ids of (context, continuation); ``cache`` memoises context encodings across choices."""
    if not context:
        return [prefix_token_id(tokenizer)], encode(tokenizer, continuation)
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    if cache is None:
        context_ids = encode(tokenizer, context)
    elif (context_ids := cache.get(context)) is None:
        context_ids = cache[context] = encode(tokenizer, context)
    whole = encode(tokenizer, context + continuation)
    return context_ids, whole[len(context_ids):]


class TrainTarget(str):
    """A training target that carries how its protocol trains on it.

    The generation protocol's training text (LLM-Adapters) ends with the EOS *id* and puts the
    loss on the prompt too; a plain ``(prompt, target)`` pair cannot say so, and the batcher
    only sees pairs. ``encode_train`` honours these flags on top of its own arguments.
    """

    add_eos: bool
    train_on_inputs: bool

    def __new__(cls, text: str, add_eos: bool = False, train_on_inputs: bool = False) -> "TrainTarget":
        obj = super().__new__(cls, text)
        obj.add_eos, obj.train_on_inputs = add_eos, train_on_inputs
        return obj


def encode_train(
    tokenizer: Any,
    prompt: str,
    target: str,
    max_length: int,
    train_on_inputs: bool = False,
    add_eos: bool = False,
) -> tuple[list[int], list[int]]:
    """(input_ids, labels) of one training text: prompt then target, loss on the target.

    Labels are -100 on the prompt unless ``train_on_inputs``. ``add_eos`` appends the EOS id
    (the generation protocol's training text ends with it; appending the EOS *string* would be
    wrong for the byte tokenizer). A ``TrainTarget`` can switch either on. Too long: the
    prompt loses tokens from the left so the target survives; a target longer than
    ``max_length`` keeps its first ``max_length`` tokens.
    """
    if isinstance(target, TrainTarget):
        add_eos, train_on_inputs = add_eos or target.add_eos, train_on_inputs or target.train_on_inputs
    prompt_ids, target_ids = encode_pair(tokenizer, prompt, target)
    if add_eos:
        target_ids = target_ids + [tokenizer.eos_token_id]
    target_ids = target_ids[:max_length]
    keep = max_length - len(target_ids)
    prompt_ids = prompt_ids[max(0, len(prompt_ids) - keep):] if keep > 0 else []
    labels = (prompt_ids if train_on_inputs else [IGNORE_INDEX] * len(prompt_ids)) + target_ids
    return prompt_ids + target_ids, labels
