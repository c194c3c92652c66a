"""LLM-Adapters' text conventions: their prompt templates and their answer extraction.

Kept free of torch so task loading and lm-eval's ``process_results`` stay light. The model
answers the record's instruction in free text; an answer is then extracted from the response:
the first case-sensitive occurrence of one of the task's answer labels ("answer1".."answer5",
"true"/"false", ...), or for math the last number (fractions allowed), compared numerically
with a tolerance of 1e-3 as LLM-Adapters' ``evaluate.py`` does.

Templates are copied character for character from LLM-Adapters (EVALUATION.md; the with-input
variants from their ``commonsense_evaluate.py`` / ``finetune.py``): the training copy differs
from the evaluation copy (two spaces after "request." and blank lines holding 16 spaces), and a
model trained on one is evaluated on the other, exactly as in their code.
"""
from __future__ import annotations

import hashlib
import math
import re
from fractions import Fraction
from typing import Any, Sequence

from tasks.base import Example, Task

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


RECORD_FIELDS = ("instruction", "output", "answer")


def check_record(rec: Any) -> None:
    """An LLM-Adapters record ``{instruction, input, output, answer}`` with text fields, else ValueError."""
    if not isinstance(rec, dict):
        raise ValueError(f"record is a {type(rec).__name__}, not an object")
    for key in RECORD_FIELDS:
        if not isinstance(rec.get(key), str):
            raise ValueError(f"missing or non-text field {key!r}")
    if not isinstance(rec.get("input", ""), str):
        raise ValueError("field 'input' is not text")


# What LLM-Adapters put between an option and the next label (or "Answer format:"): a blank line
# (PIQA), else one space. Exactly one is removed; the option's own spaces are its text (PIQA's
# solutions end in spaces that lm-eval scores).
SEPARATORS = ("\n\n", " ")


def without_separator(text: str) -> str:
    """``text`` less the one separator LLM-Adapters wrote after it (nothing else is removed)."""
    for sep in SEPARATORS:
        if text.endswith(sep):
            return text[:-len(sep)]
    return text


def parse_instruction(instruction: str, header: str) -> tuple[str, tuple[str, ...], list[str]]:
    """(question, options, answer labels) from an LLM-Adapters instruction; ValueError if it does not fit.

    Options are found label by label ("Answer1: ", then "Answer2: " after it, ...) because the
    separators vary (a space, or a blank line in PIQA). True/false questions list no options.
    Question and options are the source's text exactly: only the separators are cut.
    """
    body, sep, fmt = instruction.rpartition("Answer format: ")
    if not sep:
        raise ValueError("no 'Answer format:' in instruction")
    labels = fmt.strip().split("/")
    if not body.startswith(header):
        raise ValueError(f"instruction does not start with {header!r}")
    body = without_separator(body[len(header):])
    if labels == ["true", "false"]:
        return body, (), labels
    names = [label[:1].upper() + label[1:] for label in labels]
    start = body.find(f"\n\n{names[0]}: ")
    if start < 0:
        raise ValueError(f"no '{names[0]}:' option after the question")
    question, pos, options = body[:start], start + 2, []
    for k, name in enumerate(names):
        begin = pos + len(name) + 2
        end = body.find(f"{names[k + 1]}: ", begin) if k + 1 < len(names) else len(body)
        if end < 0:
            raise ValueError(f"no '{names[k + 1]}:' option")
        option = without_separator(body[begin:end]) if k + 1 < len(names) else body[begin:end]
        if not option.strip():
            raise ValueError(f"option {name} is empty")
        options.append(option)
        pos = end
    return question, tuple(options), labels


_LETTER_OPTION = re.compile(r"\(([A-Z])\)\s")


def listed_labels(instruction: str) -> list[str]:
    """The answer labels an instruction lists: its "Answer format: a/b/c" line, else the letters
    of "Answer Choices: (A) x (B) y ..." (AQuA), else none. Extraction takes its vocabulary
    from these, never from the gold answers (a letter that is never the answer is still an option)."""
    _, sep, fmt = instruction.rpartition("Answer format: ")
    if sep:
        return fmt.strip().split("/")
    _, sep, choices = instruction.rpartition("Answer Choices:")
    return list(dict.fromkeys(_LETTER_OPTION.findall(choices + " "))) if sep else []


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
