"""What a task is, independent of where its data comes from.

A task turns data records into ``Example`` objects and exposes what each evaluation protocol
(``tasks.protocols``) needs from it:

* likelihood (multiple choice, lm-evaluation-harness style): ``requests(ex)`` gives one
  ``(context, continuation)`` pair per choice; the scorer picks the choice whose
  continuation has the highest summed log-likelihood (``acc``) or per-character
  log-likelihood (``acc_norm``); ``train_pair(ex)`` is the gold request;
* generation (LLM-Adapters style): the record's ``instruction``/``input``/``output``, the
  answer ``vocabulary`` (or ``answer_type == "number"``) used to extract an answer from the
  generated text, and ``max_new_tokens``.

``protocols`` lists the protocols a task supports (math has no choices, so no likelihood).

Splits: ``examples("train")`` and ``examples("test")`` are disjoint by construction; where a
task has no offline train split the loader carves a fixed, seeded part of the test file out for
training and ``split_note`` says so (it is stored in every run record).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal

Split = Literal["train", "test"]


class UnknownTask(KeyError):
    """A task or suite name nobody defines; the message lists the valid ones."""

    def __str__(self) -> str:  # KeyError quotes its message; we want a clean line
        return str(self.args[0])


@dataclass(frozen=True)
class Example:
    """One item. ``gold`` is a choice index for multiple choice, a number string for math."""

    id: str
    question: str
    choices: tuple[str, ...]
    gold: int | str
    instruction: str = ""  # the LLM-Adapters instruction (options inside), for generation
    output: str = ""  # the LLM-Adapters reference response, for generation-style training
    answer: str = ""  # the LLM-Adapters answer label, e.g. "answer2", "true", "18"
    input: str = ""  # the LLM-Adapters optional input (selects their with-input template)
    labels: tuple[str, ...] = ()  # the answer labels this item lists (its options), for extraction


@dataclass(frozen=True)
class TaskData:
    """Loaded examples of one task plus where they came from."""

    train: list[Example]
    test: list[Example]
    source: str  # e.g. "/path/to/shared/data/llm-adapters/dataset/ARC-Easy"
    checksums: dict[str, str]  # file name -> sha256 of every file read
    split_note: str  # how train/test were obtained, e.g. "train.json" or "carved: ..."
    # tasks whose train split is one shared set (the math suite's) carry the same key, so a
    # run training on several of them uses that set once; "" = this task's own split
    shared_train: str = ""


@dataclass
class Task:
    """A registered task. ``load`` is called lazily (and cached by the registry)."""

    name: str
    family: str  # "commonsense", "math", "synthetic", ...
    description: str
    load: Callable[[], TaskData]
    vocabulary: tuple[str, ...] = ()  # answer labels for generation-protocol extraction
    answer_type: Literal["choice", "number"] = "choice"
    # formats one example into per-choice (context, continuation) requests
    format_requests: Callable[[Example], list[tuple[str, str]]] | None = None
    protocols: tuple[str, ...] = ("likelihood", "generate")  # what the task's examples support
    max_new_tokens: int = 32  # generation budget of the generation protocol (tasks/EVALUATION.md)
    metrics: tuple[str, ...] = ("acc", "acc_norm")  # what the likelihood protocol reports
    text_id: str = ""  # names a transform of the data's text (e.g. lm-eval's HellaSwag preprocessing)
    extra: dict = field(default_factory=dict)

    def extraction_vocabulary(self, ex: Example) -> tuple[str, ...]:
        """The labels an answer is extracted from: the task's fixed list, else the item's options."""
        return self.vocabulary or ex.labels

    def requests(self, ex: Example) -> list[tuple[str, str]]:
        if self.format_requests is not None:
            return self.format_requests(ex)
        context = f"Question: {ex.question}\nAnswer:"
        return [(context, f" {c}") for c in ex.choices]

    def train_pair(self, ex: Example) -> tuple[str, str]:
        """Prompt and target for the likelihood protocol's training text: the gold request."""
        assert isinstance(ex.gold, int), f"{self.name}: train_pair needs a multiple-choice example"
        return self.requests(ex)[ex.gold]

    @property
    def chance(self) -> float | None:
        """Accuracy of uniform guessing (reported beside accuracies); None if not defined.

        Set by ``registry.load``: the mean over test items of 1/(number of choices), or of
        1/(number of listed answer labels) for items that carry no parsed choices."""
        if self.answer_type != "choice":
            return None
        return self.extra.get("chance")
