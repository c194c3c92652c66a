"""Hub fallback: the commonsense tasks from the Hugging Face hub, as LLM-Adapters records.

Only used when the offline files are missing and the user opted in (``tasks.sources``).
Converting hub rows into the LLM-Adapters record format lets one parser serve both sources and
gives hub items the same ``instruction``/``output`` the generation protocol needs. The test
splits are the ones LLM-Adapters evaluates on (validation where the test labels are hidden).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from tasks.sources import DataError, hub_rows

Record = dict[str, str]
HELLASWAG_HEADER = "Please choose the correct ending to complete the given sentence: "


def _record(instruction: str, answer: str) -> Record:
    return {"instruction": instruction, "input": "", "output": f"the correct answer is {answer}", "answer": answer}


def _numbered(word: str, options: list[str], sep: str = " ") -> str:
    return sep.join(f"{word}{k + 1}: {o}" for k, o in enumerate(options))


def _fmt(word: str, n: int) -> str:
    return "/".join(f"{word}{k + 1}" for k in range(n))


def boolq(r: dict) -> Record:
    q = f"Please answer the following question with true or false, question: {r['question']}?"
    return _record(f"{q}\n\nAnswer format: true/false", "true" if r["answer"] else "false")


def piqa(r: dict) -> Record:
    opts = _numbered("Solution", [r["sol1"], r["sol2"]], "\n\n")
    text = f"Please choose the correct solution to the question: {r['goal']}\n\n{opts}\n\nAnswer format: {_fmt('solution', 2)}"
    return _record(text, f"solution{int(r['label']) + 1}")


def siqa(r: dict) -> Record:
    opts = _numbered("Answer", [r["answerA"], r["answerB"], r["answerC"]])
    text = f"Please choose the correct answer to the question: {r['context']} {r['question']}\n\n{opts}\n\nAnswer format: {_fmt('answer', 3)}"
    return _record(text, f"answer{int(r['label'])}")


def winogrande(r: dict) -> Record:
    opts = _numbered("Option", [r["option1"], r["option2"]])
    text = (
        "Please choose the correct answer to fill in the blank to complete the given sentence: "
        f"{r['sentence']}\n\n{opts} Answer format: {_fmt('option', 2)}"
    )
    return _record(text, f"option{int(r['answer'])}")


def arc_like(question_key: str) -> Callable[[dict], Record]:
    def convert(r: dict) -> Record:
        texts, labels = r["choices"]["text"], r["choices"]["label"]
        opts = _numbered("Answer", list(texts))
        text = f"Please choose the correct answer to the question: {r[question_key]}\n\n{opts}\n\nAnswer format: {_fmt('answer', len(texts))}"
        return _record(text, f"answer{list(labels).index(r['answerKey']) + 1}")

    return convert


def hellaswag_record(ctx: str, endings: list[str], gold: int) -> Record:
    """An LLM-Adapters-style record for a HellaSwag item (the benchmark's training format)."""
    text = f"{HELLASWAG_HEADER}{ctx}\n\n{_numbered('Ending', endings)}\n\nAnswer format: {_fmt('ending', len(endings))}"
    return _record(text, f"ending{gold + 1}")


def _wikihow_clean(text: str) -> str:
    """Drop WikiHow markup ("[title]", "[header]", ...) the way lm-eval's HellaSwag task does."""
    text = re.sub(r"\[.*?\]", "", text.strip().replace(" [title]", ". "))
    return text.replace("  ", " ")


def hellaswag(r: dict) -> Record:
    """Context and endings built as lm-evaluation-harness builds its HellaSwag query."""
    ctx = _wikihow_clean(f"{r['activity_label']}: {r['ctx_a']} {r['ctx_b'].capitalize()}")
    return hellaswag_record(ctx, [_wikihow_clean(e) for e in r["endings"]], int(r["label"]))


@dataclass(frozen=True)
class HubSpec:
    path: str
    config: str | None
    train_split: str
    test_split: str
    convert: Callable[[dict], Record]

    def label(self) -> str:
        return self.path + (f" ({self.config})" if self.config else "")


@dataclass(frozen=True)
class HubRecords:
    splits: dict[str, list[Record]]  # "train" / "test" -> records
    fingerprints: dict[str, str]
    train_split: str
    test_split: str


HUB: dict[str, HubSpec] = {
    "boolq": HubSpec("google/boolq", None, "train", "validation", boolq),
    "piqa": HubSpec("ybisk/piqa", None, "train", "validation", piqa),
    "siqa": HubSpec("allenai/social_i_qa", None, "train", "validation", siqa),
    "hellaswag": HubSpec("Rowan/hellaswag", None, "train", "validation", hellaswag),
    "winogrande": HubSpec("allenai/winogrande", "winogrande_xl", "train", "validation", winogrande),
    "arc_e": HubSpec("allenai/ai2_arc", "ARC-Easy", "train", "test", arc_like("question")),
    "arc_c": HubSpec("allenai/ai2_arc", "ARC-Challenge", "train", "test", arc_like("question")),
    "obqa": HubSpec("allenai/openbookqa", "main", "train", "test", arc_like("question_stem")),
}


def records(name: str) -> HubRecords:
    """Both splits of a task from the hub as LLM-Adapters records; DataError on any failure."""
    spec = HUB[name]
    splits, prints = {}, {}
    for role, split in (("train", spec.train_split), ("test", spec.test_split)):
        rows, prints[f"hub:{spec.label()}:{split}"] = hub_rows(spec.path, spec.config, split)
        converted = []
        for i, row in enumerate(rows):
            try:
                converted.append(spec.convert(row))
            except (KeyError, TypeError, ValueError) as err:
                raise DataError(f"hub {spec.label()} split {split!r}: row {i}: unexpected format ({err!r})") from None
        splits[role] = converted
    return HubRecords(splits, prints, spec.train_split, spec.test_split)
