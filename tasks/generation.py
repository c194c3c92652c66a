"""The generation protocol of LLM-Adapters (and the DoRA / LoSiA tables built on it).

The model answers the record's instruction in free text; an answer is then extracted from the
response: the first case-sensitive occurrence of one of the task's answer labels
("answer1".."answer5", "true"/"false", ...), or for math the last number (fractions allowed),
compared numerically with a tolerance of 1e-3 as LLM-Adapters' ``evaluate.py`` does.

Templates are copied character for character from LLM-Adapters (evaluation.md; the with-input
variants from their ``commonsense_evaluate.py`` / ``finetune.py``): the training copy differs
from the evaluation copy (two spaces after "request." and blank lines holding 16 spaces), and a
model trained on one is evaluated on the other, exactly as in their code.
Decoding is greedy by default (a CPU-friendly choice; ``num_beams=4`` is their setting) and
prompts are batched with left padding and an attention mask, so a batch generates the same
tokens as the prompts one by one.
"""
from __future__ import annotations

import hashlib
import math
import re
from fractions import Fraction
from typing import Any, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from tasks.base import Example, Task
from tasks.formatting import encode
from tasks.likelihood import resolve_max_length

_INDENT = " " * 16
EVAL_TEMPLATE = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request. "
    f"\n\n{_INDENT}### Instruction:\n{_INDENT}{{instruction}}\n\n{_INDENT}### Response:\n{_INDENT}"
)
EVAL_TEMPLATE_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. Write a "
    f"response that appropriately completes the request.\n\n{_INDENT}### Instruction:\n{_INDENT}{{instruction}}"
    f"\n\n{_INDENT}### Input:\n{_INDENT}{{input}}\n\n{_INDENT}### Response:\n{_INDENT}"
)
TRAIN_TEMPLATE = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.  "
    f"\n\n{_INDENT}### Instruction:\n{_INDENT}{{instruction}}\n{_INDENT}\n{_INDENT}### Response:\n{_INDENT}"
)
TRAIN_TEMPLATE_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. Write a "
    f"response that appropriately completes the request.  \n\n{_INDENT}### Instruction:\n{_INDENT}{{instruction}}"
    f"\n{_INDENT}\n{_INDENT}### Input:\n{_INDENT}{{input}}\n{_INDENT}\n{_INDENT}### Response:\n{_INDENT}"
)
RESPONSE_MARK = "### Response:"
MATH_TOLERANCE = 1e-3  # LLM-Adapters' ``miss``
# a number: optional sign, digits with an optional decimal part, optionally "/ digits" (a fraction)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:\s*/\s*\d+(?:\.\d+)?)?")


def eval_prompt(ex: Example) -> str:
    template = EVAL_TEMPLATE_INPUT if ex.input else EVAL_TEMPLATE
    return template.format(instruction=ex.instruction, input=ex.input)


def train_prompt(ex: Example) -> str:
    template = TRAIN_TEMPLATE_INPUT if ex.input else TRAIN_TEMPLATE
    return template.format(instruction=ex.instruction, input=ex.input)


def prompt_id() -> str:
    """Short id of the templates in use: a change of any template changes every record's id."""
    blob = "\x00".join([EVAL_TEMPLATE, EVAL_TEMPLATE_INPUT, TRAIN_TEMPLATE, TRAIN_TEMPLATE_INPUT])
    return "llm-adapters#" + hashlib.sha256(blob.encode()).hexdigest()[:8]


def response_text(generated: str) -> str:
    """The response as LLM-Adapters keeps it: up to a repeated "### Response:" marker, stripped.

    They decode prompt and continuation and take ``split("### Response:")[1]``; we decode the
    new tokens only, so the prompt's own marker is already gone.
    """
    return generated.split(RESPONSE_MARK)[0].strip()


def extract_choice(response: str, vocabulary: Sequence[str]) -> str | None:
    """The first occurrence (case-sensitive) of any label; longer labels win at the same position."""
    if not vocabulary:
        return None
    pattern = "|".join(re.escape(v) for v in sorted(vocabulary, key=len, reverse=True))
    found = re.search(pattern, response)
    return found.group(0) if found else None


def parse_number(text: str) -> float | None:
    """A number or fraction ("3", "-2.5", "3/4") as a float; None if it is not one or divides by 0."""
    try:
        value = Fraction(re.sub(r"\s+", "", text))
    except (ValueError, ZeroDivisionError):
        return None
    return float(value)


def extract_number(response: str) -> float | None:
    """The last number in the response (thousands commas removed, fractions evaluated)."""
    for match in reversed(_NUMBER.findall(response.replace(",", ""))):
        value = parse_number(match)
        if value is not None:
            return value
    return None


def numbers_match(pred: float | None, gold: str) -> bool:
    target = parse_number(gold)
    return pred is not None and target is not None and math.isfinite(pred) and abs(pred - target) <= MATH_TOLERANCE


def gold_answer(task: Task, ex: Example) -> str:
    """What a response must contain: the answer label, or for math the gold number."""
    return str(ex.gold) if task.answer_type == "number" else ex.answer


def judge(answer_type: str, vocabulary: Sequence[str], gold: str, generated: str) -> tuple[Any, bool]:
    """(extracted answer, correct) for one raw generation; no answer found is wrong.

    Takes plain values so lm-eval's ``process_results`` can call it on an exported document.
    """
    response = response_text(generated)
    if answer_type == "number":
        pred = extract_number(response)
        return pred, numbers_match(pred, gold)
    label = extract_choice(response, vocabulary)
    return label, label is not None and label == gold


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
        with torch.inference_mode(), tqdm(total=len(prompts), desc=desc, unit="item", disable=not progress) as bar:
            for start in range(0, len(order), batch_size):
                chunk = order[start:start + batch_size]
                ids, mask = _left_padded([encoded[i] for i in chunk], pad_id)
                result = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device),
                                        generation_config=config)
                for i, row in zip(chunk, result[:, ids.shape[1]:].tolist()):
                    out[i] = tokenizer.decode(row, skip_special_tokens=True)
                bar.update(len(chunk))
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
) -> list[dict[str, Any]]:
    """Per-example records: the raw generated text, the extracted answer, the gold and correctness.

    ``max_new_tokens`` 0 means the task's own budget (32 for choice tasks, 256 for math).
    """
    budget = max_new_tokens or task.max_new_tokens
    texts = generate(model, tokenizer, [eval_prompt(ex) for ex in examples], budget, num_beams, batch_size,
                     device, progress, task.name)
    return records(task, examples, texts)


def records(task: Task, examples: Sequence[Example], texts: Sequence[str]) -> list[dict[str, Any]]:
    """Per-example records from raw generations (shared by the native and lm-eval backends)."""
    out = []
    for ex, text in zip(examples, texts):
        gold = gold_answer(task, ex)
        pred, correct = judge(task.answer_type, task.vocabulary, gold, text)
        out.append({"id": ex.id, "gold": gold, "pred": pred, "correct": correct, "generated": text})
    return out
