"""``select``: tune one key (typically ``lr``) the same way for every method.

Per (model, method, training tasks, other settings) each candidate value is trained with
``validation`` training items per task held out (seeded, the same items for every method, never
test items) and scored on them as phase ``val``; the best value is used for the final runs,
which are the very runs ``bench run --set lr=BEST`` would do.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from harness import metrics, records, safe_io
from harness.config import RunConfig
from harness.sweep.file import Sweep
from harness.sweep.grid import Group, Groups


def tuning_runs(sweep: Sweep, groups: Groups) -> list[RunConfig]:
    """Every group's tuning runs (a group with one candidate needs none)."""
    return [cfg for g in groups.values() if len(g) > 1 for cfgs in _tuning(sweep, g).values() for cfg in cfgs]


def _tuning(sweep: Sweep, candidates: dict[str | None, list[RunConfig]]) -> dict[str | None, list[RunConfig]]:
    """Per candidate value, its runs on the tuning seeds with training items held out."""
    select = sweep.select
    assert select is not None
    seeds = select.seeds or sweep.seeds[:1]
    return {value: [dataclasses.replace(cfg, validation=select.validation) for cfg in cfgs if cfg.seed in seeds]
            for value, cfgs in candidates.items()}


def val_score(out: Path, cfgs: list[RunConfig], metric: str) -> float | None:
    """Mean validation metric over the runs and their training tasks; None until all are ok."""
    name = metric.removeprefix("val_")
    values = []
    for cfg in cfgs:
        path = records.run_dir(out, cfg.run_id) / "run.json"
        record = records.read_record(path)
        if record is None or record.status != "ok":
            return None
        values += [v for e in record.evals if e.phase == metrics.VAL for v in [e.value(name)] if v is not None]
    return sum(values) / len(values) if values else None


@dataclass
class Choice:
    """The outcome of tuning one group: every candidate's score and the value chosen."""

    group: Group
    scores: dict[str | None, float | None]
    chosen: str | None  # the value (None: the key is not set, i.e. the default)
    decided: bool  # False while the tuning runs are pending (or all failed)

    def line(self, over: str) -> str:
        model, method, rest, tasks = self.group
        settings = " ".join(f"{k}={v}" for k, v in rest)
        cells = ", ".join(f"{over}={v}: {'-' if s is None else f'{s:.3f}'}" for v, s in self.scores.items())
        outcome = f"chosen {over}={self.chosen}" if self.decided else "not decided (tuning runs pending or failed)"
        return f"{model}  {method}  {'+'.join(tasks)}  {settings}  |  {cells}  ->  {outcome}"


def choose(sweep: Sweep, out: Path, groups: Groups) -> list[Choice]:
    """Best candidate per group by validation score (ties: the first listed); one candidate needs no tuning."""
    assert sweep.select is not None
    choices = []
    for group, candidates in groups.items():
        if len(candidates) == 1:
            choices.append(Choice(group, {v: None for v in candidates}, next(iter(candidates)), True))
            continue
        scores = {v: val_score(out, cfgs, sweep.select.metric) for v, cfgs in _tuning(sweep, candidates).items()}
        done = {v: s for v, s in scores.items() if s is not None}
        choices.append(Choice(group, scores, max(done, key=done.__getitem__) if done else None, bool(done)))
    return choices


def finals(groups: Groups, choices: list[Choice]) -> list[RunConfig]:
    """The final runs of every decided group: its chosen value on every seed, nothing held out."""
    return [cfg for c in choices if c.decided for cfg in groups[c.group][c.chosen]]


def selection_table(sweep: Sweep, choices: list[Choice]) -> str:
    select = sweep.select
    assert select is not None
    seeds = ",".join(map(str, select.seeds or sweep.seeds[:1]))
    head = (f"selection of {select.over} by {select.metric} ({select.validation} held-out training items per task, "
            f"tuning seed(s) {seeds}):")
    return "\n".join([head, *(f"  {c.line(select.over)}" for c in choices)])


def write_selection(sweep: Sweep, out: Path, choices: list[Choice]) -> Path:
    """The selection as a CSV beside the results (which value each final run uses, and why)."""
    import pandas as pd

    assert sweep.select is not None
    rows = [{"model": c.group[0], "method": c.group[1], "train_tasks": "+".join(c.group[3]),
             "settings": " ".join(f"{k}={v}" for k, v in c.group[2]), "key": sweep.select.over, "value": v,
             "metric": sweep.select.metric, "score": s, "chosen": v == c.chosen}
            for c in choices for v, s in c.scores.items()]
    path = Path(out) / f"selection-{sweep.name}.csv"
    safe_io.write_text(path, pd.DataFrame(rows).to_csv(index=False))
    return path
