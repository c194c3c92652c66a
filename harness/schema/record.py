"""The run record (``runs/<run_id>/run.json``) as types: what every reader and writer agrees on.

``RunRecord.from_json`` reads every format written so far and returns the current one:

* records before the settings catalogue kept the evaluation keys inside ``config.train`` and a
  duplicate of the whole block as ``train_config``; they are split into ``config.train`` (the
  trainer's keys) and ``config.eval`` (the evaluation's), and the duplicate is dropped;
* evaluation-only runs before it did not say what they evaluated: ``evaluated`` is rebuilt from
  the config's model and adapter (no content hash: it was never taken).

``to_json`` writes the current format; ``rows`` gives the run's rows of the tidy table. The
driver fills a record step by step (``harness.driver``) and ``harness.runfolder`` saves it; no
other module builds or writes one.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from harness.schema import figures, settings
from harness.schema.phases import TRAIN

_FIRST_COLUMNS = [
    "run_id", "model", "method", "train_tasks", "seed", "task", "phase", "metric", "value", "stderr", "n",
    "unit", "protocol", "backend", "prompt", "shots", "chat_template", "eval_limit", "data_sha256", "chance", "status",
]
# every setting that changes what an evaluation measures is a column (``settings.MEASURED``; the
# decoding keys came with the catalogue), then what an evaluation-only run scored
TIDY_COLUMNS = [*_FIRST_COLUMNS, *(c for c in settings.MEASURED_BY if c not in _FIRST_COLUMNS),
                "adapter", "adapter_sha256"]
_MEASURED = [s for s in settings.SETTINGS if settings.MEASURED in s.affects]
OK, FAILED, RUNNING, BUSY = "ok", "failed", "running", "busy"
# what records written before an evaluation key existed used: historical facts, not the current
# defaults (``harness.config.EvalConfig``), which may change without changing old records' meaning
LEGACY_EVAL_VALUES = {"eval_batch_size": 32, "eval_limit": 200, "num_beams": 1, "max_new_tokens": 0}


class Figure(NamedTuple):
    """A cost figure as stored: ``[value, unit]``."""

    value: float
    unit: str


@dataclass
class Evaluation:
    """One task scored in one phase: its metrics and everything that says how it was measured."""

    task: str
    phase: str
    metrics: list[dict[str, Any]]
    protocol: str | None = None
    backend: str | None = None
    prompt: str | None = None
    shots: int | None = None
    chat_template: bool = False
    data_sha256: str | None = None
    chance: float | None = None
    split_note: str | None = None
    settings: dict[str, Any] | None = None  # the evaluator's own settings (lm-eval's task config)
    cached: bool | None = None  # a "before" evaluation read from the cache

    def value(self, metric: str) -> float | None:
        return next((m["value"] for m in self.metrics if m["name"] == metric), None)

    def to_json(self) -> dict[str, Any]:
        return _plain(self)


@dataclass
class Derived:
    """A figure computed from the run's evaluations (forgetting, BWT, final average, LM-loss change)."""

    task: str
    phase: str
    metric: str
    value: float
    unit: str = ""
    n: int | None = None
    stderr: float | None = None


@dataclass
class Evaluated:
    """What a ``bench eval`` run scored: the model, and the adapter applied to it (its folder and a
    digest of its files), so its rows are never taken for the base model's."""

    model: str
    adapter: str | None = None
    adapter_sha256: str | None = None


@dataclass
class RunRecord:
    """``run.json``. Fields in the order the driver's steps fill them; ``extra`` keeps keys a newer
    or foreign writer added, so reading and saving a record never loses them."""

    run_id: str
    status: str
    config: dict[str, Any]
    started: str | None = None
    model_note: str | None = None
    environment: dict[str, Any] = field(default_factory=dict)
    command: str | None = None
    evaluated: Evaluated | None = None
    data: dict[str, Any] = field(default_factory=dict)
    base_params: int | None = None
    evals: list[Evaluation] = field(default_factory=list)
    text_loss_before: float | None = None
    stages: list[dict[str, Any]] = field(default_factory=list)
    resumed_after_stage: int | None = None
    load: dict[str, Any] | None = None
    distributed: dict[str, Any] | None = None  # several processes: world size, nodes, rank checksums
    text_loss_after: float | None = None
    derived: list[Derived] = field(default_factory=list)
    accuracy_matrix: dict[str, Any] | None = None
    costs: dict[str, Figure] = field(default_factory=dict)
    calibration_memory: dict[str, Any] | None = None
    method_record: dict[str, Any] | None = None
    saved: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    tracker_error: str | None = None
    ended: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    # -- reading and writing ---------------------------------------------------------------

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "RunRecord":
        """A record from ``run.json``'s object, of any format written so far (see the module doc).
        Raises KeyError / TypeError / ValueError on a record damaged below the top level."""
        data = dict(data)
        data.pop("train_config", None)  # the old duplicate of config.train
        config = normalized_config(data.pop("config"))
        names = {f.name for f in dataclasses.fields(cls)} - {"extra", "config"}
        known = {k: data.pop(k) for k in list(data) if k in names}
        evals = [evaluation_from_json(e) for e in known.pop("evals", None) or []]
        derived = [Derived(**{k: v for k, v in d.items() if k in _DERIVED}) for d in known.pop("derived", None) or []]
        costs = {k: Figure(v[0], v[1]) for k, v in (known.pop("costs", None) or {}).items()}
        evaluated = known.pop("evaluated", None)
        if evaluated is None and not config.get("train_tasks") and "model" in config:  # an old bench eval
            evaluated = {"model": config["model"], "adapter": config.get("adapter")}
        return cls(config=config, evals=evals, derived=derived, costs=costs,
                   evaluated=Evaluated(**evaluated) if evaluated else None,
                   stages=known.pop("stages", None) or [], environment=known.pop("environment", None) or {},
                   data=known.pop("data", None) or {}, **known, extra=data)

    def to_json(self) -> dict[str, Any]:
        """The record as ``run.json`` holds it (fields left at None or empty are not written)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "extra":
                out.update(value)
            elif f.name in ("run_id", "status", "config") or value not in (None, [], {}):
                out[f.name] = _plain(value)
        return out

    # -- the tidy table --------------------------------------------------------------------

    def rows(self) -> list[dict[str, Any]]:
        """Rows of the tidy table (``TIDY_COLUMNS``): accuracies per task and phase, derived
        figures, costs per run; a failed run without figures gets one ``status`` row. Units are
        the catalogue's (``harness.schema.figures``): an uncatalogued figure is an error, except
        a metric an lm-eval task names itself."""
        cfg = self.config
        what = self.evaluated or Evaluated(cfg["model"], cfg.get("adapter"))
        base = {
            "run_id": self.run_id, "model": cfg["model"], "method": cfg["method"],
            "train_tasks": "+".join(cfg["train_tasks"]), "seed": cfg["seed"], **self._measured(),
            "protocol": cfg.get("protocol", "likelihood"), "backend": cfg.get("backend", "native"),
            "shots": None, "chat_template": None, "status": self.status,
            "adapter": what.adapter, "adapter_sha256": what.adapter_sha256,
        }
        rows = []
        for ev in self.evals:
            for metric in ev.metrics:
                figure = figures.task_metric(metric["name"]) if ev.backend == "lm-eval" else figures.get(metric["name"])
                rows.append({
                    **base, **self.measured_by(ev), "task": ev.task, "phase": ev.phase, "metric": metric["name"],
                    "value": metric["value"], "stderr": metric.get("stderr"), "n": metric.get("n"),
                    "unit": figure.unit, "chance": ev.chance,
                })
        for d in self.derived:  # forgetting, BWT, final average accuracy, LM-loss change
            rows.append({**base, "task": d.task, "phase": d.phase, "metric": d.metric, "value": d.value,
                         "stderr": d.stderr, "n": d.n, "unit": d.unit or figures.unit(d.metric), "data_sha256": None,
                         "chance": None})
        for name, (value, unit) in self.costs.items():
            rows.append({**base, "task": base["train_tasks"], "phase": TRAIN, "metric": name, "value": value,
                         "stderr": None, "n": None, "unit": unit, "data_sha256": None, "chance": None})
        if self.status != OK and not rows:
            rows.append({**base, "task": base["train_tasks"], "phase": TRAIN, "metric": "status", "value": None,
                         "stderr": None, "n": None, "unit": "", "data_sha256": None, "chance": None})
        return rows

    # -- small questions readers ask -------------------------------------------------------

    def _measured(self) -> dict[str, Any]:
        """The run's settings that change what an evaluation measures, by their column."""
        cfg = self.config
        return {s.column: (cfg["eval"] if s.owner == settings.EVAL else cfg).get(s.key) for s in _MEASURED}

    def measured_by(self, ev: Evaluation | dict[str, Any]) -> dict[str, Any]:
        """How ``ev`` was measured (``settings.MEASURED_BY``): the run's settings, overridden by what
        the evaluation itself recorded (an ``lm-eval:`` task reports its own protocol and shots)."""
        ev = ev if isinstance(ev, Evaluation) else evaluation_from_json(ev)
        own = {c: getattr(ev, c) for c in settings.MEASURED_BY if getattr(ev, c, None) is not None}
        return {**self._measured(), **own}

    def cost(self, name: str) -> float | None:
        figure = self.costs.get(name)
        return figure.value if figure else None


_DERIVED = {f.name for f in dataclasses.fields(Derived)}
_EVALUATION = {f.name for f in dataclasses.fields(Evaluation)}


def normalized_config(config: dict[str, Any]) -> dict[str, Any]:
    """A recorded config in the current layout: the trainer's keys under ``train``, the
    evaluation's under ``eval`` (older records kept both under ``train``)."""
    config = dict(config)
    train = dict(config.get("train") or {})
    evaluation = {**LEGACY_EVAL_VALUES, **{k: train.pop(k) for k in settings.EVAL_KEYS if k in train},
                  **(config.get("eval") or {})}
    config.update(train=train, eval=evaluation)
    return config


def evaluation_from_json(data: dict[str, Any]) -> Evaluation:
    """An evaluation summary as stored (keys it does not know, e.g. the settings this branch's
    first version copied into it, are left out)."""
    return Evaluation(**{k: v for k, v in data.items() if k in _EVALUATION})


def _plain(value: Any) -> Any:
    """Dataclasses and named tuples as JSON values (a figure as ``[value, unit]``)."""
    if dataclasses.is_dataclass(value):
        return {k: _plain(v) for k, v in dataclasses.asdict(value).items() if v is not None}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
