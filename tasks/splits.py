"""Carving a training part out of a test file when no training split exists offline.

The carve must not depend on the run seed: every run, method and seed has to evaluate the same
test items, or accuracies would not be comparable. Only items whose text occurs once in the file
are eligible, so a duplicated item can never be both trained on and evaluated.
"""
from __future__ import annotations

import random
from typing import Hashable, Sequence

CARVE_SEED = 1234
CARVE_FRACTION = 0.3
CARVE_MAX = 1000


def carve(
    keys: Sequence[Hashable],
    fraction: float = CARVE_FRACTION,
    max_items: int = CARVE_MAX,
    seed: int = CARVE_SEED,
) -> tuple[list[int], list[int], str]:
    """Split item indices into (train, test, note); both lists ascending, disjoint, complete.

    ``keys`` identify item content (e.g. the instruction text).
    """
    counts: dict[Hashable, int] = {}
    for k in keys:
        counts[k] = counts.get(k, 0) + 1
    eligible = [i for i, k in enumerate(keys) if counts[k] == 1]
    n_train = min(max_items, int(fraction * len(keys)), len(eligible))
    chosen = set(random.Random(seed).sample(eligible, n_train))
    train = [i for i in range(len(keys)) if i in chosen]
    test = [i for i in range(len(keys)) if i not in chosen]
    note = (
        f"carved: {n_train} of {len(keys)} test-file items (seed {seed}, {fraction:.0%} capped at {max_items}, "
        f"only items whose text is unique in the file) are the train split; the other {len(test)} are the "
        f"test split, in file order"
    )
    return train, test, note
