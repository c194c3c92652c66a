"""What a reader must know before believing a run's numbers, said where the numbers are printed.

* Fair budgets: which training settings every method shared (lr, steps or epochs, batch,
  example length) and which differed, and whether the lr was tuned per method. One lr for all
  methods is a budget, not a tuning: it favours the methods whose best lr lies near it.
* Below chance: tasks on which the base model is not above chance (``reports.chance``), where a
  before->after change starts from guessing.
* Load: runs whose step times were measured while the machine was busier than its cores
  (``harness.machineload``); the figures stay, flagged.

Every function reads run records (``run.json`` dicts), so ``bench run``, ``bench sweep`` and
``bench report`` say the same thing about the same runs.
"""
from __future__ import annotations

from typing import Any, Sequence

from harness import metrics
from harness.machineload import busier_than_cores, load_note
from harness.schema.settings import BUDGET_KEYS
from reports.chance import ChanceCheck, check

SHARED = BUDGET_KEYS
TUNE_HINT = ("`bench sweep FILE --tune lr` tunes it per method on held-out training items "
             "(README, \"Fair learning rates\"; examples/fair.yaml is the main job so tuned)")


def _text(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def fair_budget(records: Sequence[dict[str, Any]], tuned: str | None = None) -> str:
    """One paragraph: the settings every method shared, those that differed, and the lr caveat."""
    by_method: dict[str, dict[str, set[str]]] = {}
    for rec in records:
        train = rec.get("config", {}).get("train", {})
        mine = by_method.setdefault(str(rec.get("config", {}).get("method")), {})
        for key in SHARED:
            if key in train and not (key == "epochs" and train.get("max_steps")):  # steps win over epochs
                mine.setdefault(key, set()).add(_text(train[key]))
    keys = [k for k in SHARED if any(k in m for m in by_method.values())]
    shared = [k for k in keys if len({v for m in by_method.values() for v in m.get(k, {"?"})}) == 1]
    same = ", ".join(f"{k} {next(iter(next(iter(by_method.values()))[k]))}" for k in shared)
    text = f"budget shared by all {len(by_method)} methods: {same or 'nothing'}"
    differing = [k for k in keys if k not in shared]
    if differing:
        text += "; differing: " + "; ".join(
            f"{k} (" + ", ".join(f"{m} {'/'.join(sorted(v.get(k, {'?'})))}" for m, v in by_method.items()) + ")"
            for k in differing)
    if tuned:
        return f"{text}. {tuned} was tuned per method on held-out training items (sweep select)."
    return (f"{text}. The lr was not tuned per method: one lr favours the methods whose best lr lies "
            f"near it, so read differences as 'at this budget'; {TUNE_HINT}.")


def chance_checks(records: Sequence[dict[str, Any]], metric: str = "acc") -> dict[tuple[str, str], ChanceCheck]:
    """Base-model (before training, or bench eval) accuracy against chance, once per (model, task)."""
    seen: dict[tuple[str, str], ChanceCheck] = {}
    for rec in records:
        model = str(rec.get("config", {}).get("model"))
        for ev in rec.get("evals", []):
            if ev.get("phase") not in (metrics.BEFORE, metrics.EVAL) or ev.get("chance") is None:
                continue
            m = next((x for x in ev.get("metrics", []) if x.get("name") == metric), None)
            if m is not None and m.get("n") and (model, ev["task"]) not in seen:
                seen[(model, ev["task"])] = check(ev["task"], float(m["value"]), int(m["n"]), float(ev["chance"]))
    return seen


def chance_lines(records: Sequence[dict[str, Any]], metric: str = "acc") -> list[str]:
    """One line per task where the base model is not above chance."""
    return [f"{c.note()}: its before->after change starts from guessing" for c in chance_checks(records, metric).values()
            if c.verdict]


def load_lines(records: Sequence[dict[str, Any]]) -> list[str]:
    """One line per run whose step times were measured on a machine busier than its cores."""
    return [f"{rec['config'].get('method')} seed {rec['config'].get('seed')}: step times measured under "
            f"{load_note(rec['load'])}: slower than on a quiet machine (flagged, not dropped)"
            for rec in records if busier_than_cores(rec.get("load"))]


def caveats(records: Sequence[dict[str, Any]], tuned: str | None = None, metric: str = "acc") -> str:
    """The run summary's caveats paragraph: fair budgets, then below chance, then load."""
    lines = [fair_budget(records, tuned)]
    lines += [f"CHANCE LEVEL: {x}" for x in chance_lines(records, metric)]
    lines += [f"BUSY MACHINE: {x}" for x in load_lines(records)]
    return "\n".join(lines)
