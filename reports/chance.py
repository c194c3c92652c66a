"""Is the base model above chance on a task? If not, the task's fine-tuning numbers start from noise.

A multiple-choice task's chance level is the accuracy of guessing uniformly: the mean over its
test items of 1/(number of choices), stored with every evaluation. The base model's accuracy
gets an exact (Clopper-Pearson) 95% interval over its n test items; the task is marked

* ``below chance`` when the whole interval lies below the chance level, and
* ``not above chance`` when the interval contains it,

so a reader never takes a before->after change on such a task for a learned skill without
seeing that the starting point is indistinguishable from (or worse than) guessing. (With a
varying number of choices the count of right guesses is Poisson-binomial, not binomial; the
binomial interval at the mean chance level is the usual, slightly conservative, stand-in.)
"""
from __future__ import annotations

from dataclasses import dataclass

from reports.stats import ALPHA

BELOW = "below chance"
AT = "not above chance"


@dataclass(frozen=True)
class ChanceCheck:
    """A base-model accuracy (fraction) with its exact 95% interval, against the chance level."""

    task: str
    acc: float
    low: float
    high: float
    chance: float
    n: int

    @property
    def verdict(self) -> str | None:
        """``below chance``, ``not above chance``, or None when the model is above chance."""
        if self.high < self.chance:
            return BELOW
        if self.low <= self.chance:
            return AT
        return None

    def note(self) -> str:
        return (f"{self.task}: base model {100 * self.acc:.1f}% [95% CI {100 * self.low:.1f}, {100 * self.high:.1f}] "
                f"on {self.n} items vs chance {100 * self.chance:.1f}%: {self.verdict or 'above chance'}")


def check(task: str, acc: float, n: int, chance: float) -> ChanceCheck:
    """The base model's accuracy ``acc`` on ``n`` items against ``chance`` (all fractions)."""
    if n < 1:
        raise ValueError(f"{task}: no test items")
    from scipy.stats import binomtest

    ci = binomtest(round(acc * n), n, chance).proportion_ci(confidence_level=1 - ALPHA, method="exact")
    return ChanceCheck(task, float(acc), float(ci.low), float(ci.high), float(chance), int(n))
