"""The generation protocol: batched generation on LLM-Adapters prompts, then answer extraction.

Decoding is greedy by default (a CPU-friendly choice; ``num_beams=4`` is LLM-Adapters'
setting) and prompts are batched with left padding and an attention mask, so a batch generates
the same tokens as the prompts one by one. Templates and extraction: ``tasks.llm_adapters``.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from tasks.base import Example, Task
from tasks.formatting import encode
from tasks.likelihood import resolve_max_length
from tasks.llm_adapters import eval_prompt, gold_answer, judge
from tasks.progress import bar as progress_bar
from tasks.sharing import Sharing, in_batch_order

def _left_padded(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row):] = torch.tensor(row)
        mask[i, width - len(row):] = 1
    return ids, mask


def generate(
    model: nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    max_new_tokens: int,
    num_beams: int = 1,
    batch_size: int = 16,
    device: str | torch.device | None = None,
    progress: bool = True,
    desc: str = "generate",
    share: Sharing | None = None,
) -> list[str]:
    """Decoded continuations (new tokens only, special tokens skipped), in prompt order.

    Prompts are tokenized like the likelihood scorer's contexts (the tokenizer's default
    special tokens), left-truncated to leave room for the new tokens, sorted by length so
    batches carry little padding, and left-padded so every row's last prompt token sits at the
    same position; the attention mask hides the padding and positions follow the mask.
    """
    from transformers import GenerationConfig

    device = torch.device(device) if device is not None else next(model.parameters()).device
    room = max(1, resolve_max_length(model, tokenizer) - max_new_tokens)
    encoded = [encode(tokenizer, p)[-room:] for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    config = GenerationConfig(max_new_tokens=max_new_tokens, num_beams=num_beams, do_sample=False,
                              pad_token_id=pad_id, eos_token_id=tokenizer.eos_token_id)
    out: list[str] = [""] * len(prompts)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), progress_bar(total=len(prompts), desc=desc, unit="item", disable=not progress) as bar:
            chunks = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]

            def compute(k: int) -> list[str]:
                ids, mask = _left_padded([encoded[i] for i in chunks[k]], pad_id)
                result = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                                        generation_config=config)
                bar.update(len(chunks[k]))
                return [tokenizer.decode(row, skip_special_tokens=True) for row in result[:, ids.shape[1]:].tolist()]

            for k, texts in in_batch_order(compute, len(chunks), share):
                for i, text in zip(chunks[k], texts):
                    out[i] = text
    finally:
        model.train(was_training)
    return out


def evaluate(
    model: nn.Module,
    tokenizer: Any,
    task: Task,
    examples: Sequence[Example],
    *,
    batch_size: int,
    device: str | torch.device | None,
    progress: bool,
    num_beams: int = 1,
    max_new_tokens: int = 0,
    prompts: Sequence[str] | None = None,
    share: Sharing | None = None,
) -> list[dict[str, Any]]:
    """Per-example records: the prompt and the raw generated text, the extracted answer, the gold
    and correctness.

    ``max_new_tokens`` 0 means the task's own budget (its task file's ``generate.max_new_tokens``).
    ``prompts``: each example's prompt when it is not LLM-Adapters' plain evaluation prompt
    (few-shot, chat template: ``tasks.prompting``).
    """
    budget = max_new_tokens or task.max_new_tokens
    prompts = list(prompts) if prompts is not None else [eval_prompt(ex) for ex in examples]
    texts = generate(model, tokenizer, prompts, budget, num_beams, batch_size, device, progress, task.name, share)
    return records(task, examples, texts, prompts)


def records(task: Task, examples: Sequence[Example], texts: Sequence[str], prompts: Sequence[str]
            ) -> list[dict[str, Any]]:
    """Per-example records from raw generations (shared by the native and lm-eval backends)."""
    out = []
    for ex, text, prompt in zip(examples, texts, prompts):
        gold = gold_answer(task, ex)
        pred, correct = judge(task.answer_type, task.extraction_vocabulary(ex), gold, text)
        out.append({"id": ex.id, "gold": gold, "pred": pred, "correct": correct, "prompt": prompt,
                    "generated": text})
    return out
