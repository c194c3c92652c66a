"""A task that needs no data files: bag-of-words sentiment, generated from a fixed seed.

It exists so the whole pipeline (train, score, report) can run with nothing but the package,
in tests and CI, and so that a method that cannot learn anything shows up: a 2-layer random
Llama with the byte tokenizer gets well above chance after ~100 steps at batch 8.

Each review mixes 2-3 words from the label's vocabulary, at most one word of the opposite
vocabulary, and neutral filler; the label is the majority polarity. Sentences are unique, and
the first ``N_TRAIN`` generated are train, the rest test, so the splits are disjoint.
"""
from __future__ import annotations

import hashlib
import random

from tasks.base import Example, Task, TaskData

SEED = 0  # fixed: the data must not change with the run seed
N_TRAIN, N_TEST = 2000, 500
# Four words a side: with 12 a side the tiny model stays near chance after 100 steps.
POSITIVE = ("good", "great", "happy", "lovely")
NEGATIVE = ("bad", "awful", "sad", "nasty")
FILLER = ("the", "a", "movie", "was", "food", "day", "and", "it", "very", "this", "place", "our", "trip",
          "really", "felt", "so", "quite", "show", "room", "staff")
LABELS = ("positive", "negative")


def review(rng: random.Random) -> tuple[str, int]:
    """One sentence and its gold index (0 positive, 1 negative)."""
    gold = rng.randrange(2)
    major, minor = (POSITIVE, NEGATIVE) if gold == 0 else (NEGATIVE, POSITIVE)
    words = rng.choices(major, k=rng.randint(2, 3)) + rng.choices(minor, k=rng.randint(0, 1))
    words += rng.choices(FILLER, k=rng.randint(3, 6))
    rng.shuffle(words)
    return " ".join(words), gold


def requests(ex: Example) -> list[tuple[str, str]]:
    return [(f"Review: {ex.question}\nSentiment:", f" {c}") for c in ex.choices]


def example(i: int, sentence: str, gold: int) -> Example:
    answer = LABELS[gold]
    return Example(
        id=f"gen-{i}",
        question=sentence,
        choices=LABELS,
        gold=gold,
        instruction=f"Is the sentiment of this review positive or negative? {sentence}\n\nAnswer format: positive/negative",
        output=f"the correct answer is {answer}",
        answer=answer,
    )


def load() -> TaskData:
    rng = random.Random(SEED)
    seen: dict[str, int] = {}
    while len(seen) < N_TRAIN + N_TEST:
        sentence, gold = review(rng)
        seen.setdefault(sentence, gold)
    items = [example(i, s, g) for i, (s, g) in enumerate(seen.items())]
    digest = hashlib.sha256("\n".join(f"{s}\t{g}" for s, g in seen.items()).encode()).hexdigest()
    note = f"generated (seed {SEED}): first {N_TRAIN} unique sentences are train, the next {N_TEST} test"
    return TaskData(items[:N_TRAIN], items[N_TRAIN:], "generated:tasks.synthetic", {"generated": digest}, note)


TASK = Task(
    name="synthetic",
    family="synthetic",
    description="bag-of-words sentiment from a fixed seed; needs no files (tests, smoke runs)",
    load=load,
    vocabulary=LABELS,
    format_requests=requests,
    extra={"train_source": "generated"},
)
