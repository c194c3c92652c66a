"""What a task is, independent of where its data comes from.

A task turns data records into ``Example`` objects and knows how to phrase an example for
each protocol:

* likelihood (multiple choice, lm-evaluation-harness style): ``requests(ex)`` gives one
  ``(context, continuation)`` pair per choice; the scorer picks the choice whose
  continuation has the highest summed log-likelihood (``acc``) or per-character
  log-likelihood (``acc_norm``);
* training: ``train_pair(ex)`` gives ``(prompt, target)``; the loss covers ``target`` only
  unless the run trains on inputs.

Splits: ``examples("train")`` and ``examples("test")`` are disjoint by construction; where a
task has no offline train split the loader carves a fixed, seeded part of the test file out for
training and ``split_note`` says so (it is stored in every run record).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal

Split = Literal["train", "test"]


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


@dataclass(frozen=True)
class TaskData:
    """Loaded examples of one task plus where they came from."""

    train: list[Example]
    test: list[Example]
    source: str  # e.g. "/path/to/shared/data/llm-adapters/dataset/ARC-Easy"
    checksums: dict[str, str]  # file name -> sha256 of every file read
    split_note: str  # how train/test were obtained, e.g. "train.json" or "carved: ..."


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
    extra: dict = field(default_factory=dict)

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
        """Accuracy of uniform guessing (reported beside accuracies); None if not defined."""
        if self.answer_type != "choice":
            return None
        return self.extra.get("chance")
