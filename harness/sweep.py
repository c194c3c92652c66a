"""Sweeps: a grid of ``bench run`` invocations in one file, run by any executor, resumable.

A sweep file (YAML, or TOML) names models, methods with ``--set``-style overrides, tasks, seeds
and a budget; every list value is an axis and the axes are expanded as a cartesian product. The
sweep becomes the ``bench run`` argument lists it stands for and each is resolved by
``cli.plan_runs``: a sweep produces exactly the run ids of the equivalent ``bench run`` commands
and is validated the same way, before anything runs.

Resubmitting a sweep skips ``ok`` runs; ``failed`` runs (exception, NaN, killed worker) are
rerun only with ``retry_failed`` since they usually fail again; runs never started or
interrupted (``running`` left behind by a killed sweep) are run.

``select`` tunes one key (typically ``lr``) the same way for every method: per (model, method,
training tasks, other settings) each candidate value is trained with ``validation`` training
items per task held out (seeded, the same items for every method, never test items) and scored
on them as phase ``val``; the best value is used for the final runs, which are the very runs
``bench run --set lr=BEST`` would do.
"""
from __future__ import annotations

import dataclasses
import itertools
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import records
from harness.config import ConfigError, RunConfig
from harness.executors import ExecutorOptions, Job, get

FLAGS = {"max_steps": "--max-steps", "epochs": "--epochs", "eval_limit": "--eval-limit"}  # bench run options
TOP_KEYS = ("model", "models", "methods", "tasks", "seeds", "per_task", "retention", "preset", "budget", "set",
            "select")
SELECT_KEYS = ("over", "metric", "validation", "seeds")


@dataclass(frozen=True)
class Selection:
    """Tune ``over`` by ``metric`` on ``validation`` held-out training items per task."""

    over: str
    metric: str = "val_acc"  # val_acc or val_acc_norm
    validation: int = 200
    seeds: tuple[int, ...] = ()  # tuning seeds; () = the sweep's first seed


@dataclass(frozen=True)
class Point:
    """One ``bench run`` invocation of a sweep: a model, one method and scalar settings."""

    model: str
    method: str
    settings: tuple[tuple[str, str], ...]  # (key, value as --set text), budget flags included

    def without(self, key: str) -> tuple[tuple[str, str], ...]:
        return tuple(kv for kv in self.settings if kv[0] != key)


@dataclass(frozen=True)
class Sweep:
    """A parsed sweep file."""

    name: str
    models: tuple[str, ...]
    methods: tuple[tuple[str, dict[str, Any]], ...]  # name and its overrides (a list value is an axis)
    tasks: str
    seeds: tuple[int, ...]
    per_task: bool
    retention: str
    preset: str | None
    common: dict[str, Any]  # budget and set: every method's overrides
    select: Selection | None


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"sweep file {path}: no such file")
    if path.suffix == ".toml":
        try:
            import tomllib
        except ImportError:  # Python 3.10: the same parser, packaged as tomli
            import tomli as tomllib

        parse, errors = tomllib.loads, (tomllib.TOMLDecodeError,)
    else:
        import yaml

        parse, errors = yaml.safe_load, (yaml.YAMLError,)
    try:
        data = parse(path.read_text())
    except errors as err:
        raise ConfigError(f"sweep file {path}: {' '.join(str(err).split())}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"sweep file {path}: expected a mapping of keys ({', '.join(TOP_KEYS)})")
    return data


def _names(value: Any, what: str) -> tuple[str, ...]:
    items = value if isinstance(value, list) else str(value).split(",")
    names = tuple(str(v).strip() for v in items if str(v).strip())
    if not names:
        raise ConfigError(f"sweep: {what} is empty")
    return names


def load(path: Path, tune: str | None = None) -> Sweep:
    """Parse and check a sweep file; ``tune`` (``--tune KEY``) adds or overrides ``select.over``."""
    data = _read(Path(path))
    unknown = set(data) - set(TOP_KEYS)
    if unknown:
        raise ConfigError(f"sweep: unknown key(s) {', '.join(sorted(unknown))}; valid: {', '.join(TOP_KEYS)}")
    for key in ("methods", "tasks"):
        if key not in data:
            raise ConfigError(f"sweep: {key} is required")
    methods = data["methods"]
    if isinstance(methods, dict):
        pairs = tuple((str(m), dict(o or {})) for m, o in methods.items())
    else:
        pairs = tuple((m, {}) for m in _names(methods, "methods"))
    budget = dict(data.get("budget") or {})
    bad = [k for k in budget if "." in k]
    if bad:
        raise ConfigError(f"sweep: budget takes trainer keys (max_steps, epochs, eval_limit, lr, ...), not {bad}")
    select = dict(data.get("select") or {})
    if tune:
        select["over"] = tune
    sweep = Sweep(
        name=Path(path).stem,
        models=_names(data.get("models", data.get("model", "smollm2-135m")), "models"),
        methods=pairs,
        tasks=",".join(_names(data["tasks"], "tasks")),
        seeds=tuple(int(s) for s in _names(data.get("seeds", [0]), "seeds")),
        per_task=bool(data.get("per_task", False)),
        retention=str(data.get("retention", "auto")),
        preset=data.get("preset"),
        common={**budget, **dict(data.get("set") or {})},
        select=_selection(select) if select else None,
    )
    if sweep.select and not set(sweep.select.seeds) <= set(sweep.seeds):
        raise ConfigError(f"sweep: select.seeds {list(sweep.select.seeds)} must be among seeds {list(sweep.seeds)}")
    return sweep


def _selection(select: dict[str, Any]) -> Selection:
    unknown = set(select) - set(SELECT_KEYS)
    if unknown or "over" not in select:
        raise ConfigError(f"sweep: select needs 'over' and takes {', '.join(SELECT_KEYS)} (got {sorted(select)})")
    metric = str(select.get("metric", "val_acc"))
    if metric not in ("val_acc", "val_acc_norm"):
        raise ConfigError(f"sweep: select.metric {metric!r}: valid are val_acc, val_acc_norm")
    seeds = select.get("seeds", [])
    seeds = tuple(int(s) for s in (seeds if isinstance(seeds, list) else [seeds]))
    selection = Selection(over=str(select["over"]), metric=metric, validation=int(select.get("validation", 200)),
                          seeds=seeds)
    if selection.validation <= 0:
        raise ConfigError("sweep: select.validation must be a positive number of held-out training items")
    return selection


def _text(value: Any) -> str:
    """A YAML/TOML scalar as ``--set`` text (parsed back by ``config.parse_value``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, (dict, tuple)):
        raise ConfigError(f"sweep: {value!r} is not a scalar (a list is an axis; a list-valued key is written "
                          f"as text, e.g. \"q_proj,v_proj\")")
    return str(value)


def _axes(settings: dict[str, Any]) -> list[tuple[tuple[str, str], ...]]:
    """Every combination of the settings' values (a list value is an axis)."""
    values = []
    for key, value in settings.items():
        options = value if isinstance(value, list) else [value]
        if not options:
            raise ConfigError(f"sweep: {key} is an empty list")
        values.append([(key, _text(v)) for v in options])
    return [tuple(combo) for combo in itertools.product(*values)]


def points(sweep: Sweep) -> list[Point]:
    """The sweep's ``bench run`` invocations: model x method x every combination of settings."""
    names = {m for m, _ in sweep.methods}
    out = []
    for method, own in sweep.methods:
        common = {}
        for key, value in sweep.common.items():
            prefix = key.split(".", 1)[0] if "." in key else None
            if prefix in (None, "trainer", method):
                common[key] = value
            elif prefix not in names:
                raise ConfigError(f"sweep: set {key}: {prefix!r} is not a method of the sweep "
                                  f"({', '.join(sorted(names))})")
        for combo in _axes({**common, **own}):
            if {"max_steps", "epochs"} <= {k for k, _ in combo}:
                raise ConfigError(f"sweep: {method}: give max_steps or epochs, not both")
            out += [Point(model, method, combo) for model in sweep.models]
    return out


def argv(sweep: Sweep, point: Point) -> list[str]:
    """The ``bench run`` arguments this point stands for."""
    args = ["run", "--model", point.model, "--methods", point.method, "--tasks", sweep.tasks,
            "--seeds", ",".join(map(str, sweep.seeds)), "--retention", sweep.retention]
    if sweep.per_task:
        args.append("--per-task")
    if sweep.preset:
        args += ["--preset", sweep.preset]
    for key, value in point.settings:
        args += [FLAGS[key], value] if key in FLAGS else ["--set", f"{key}={value}"]
    return args


def plans(sweep: Sweep, point: Point) -> list[RunConfig]:
    """The point's runs, resolved exactly as ``bench run`` resolves them."""
    from harness import cli

    try:
        args = cli.build_parser().parse_args(argv(sweep, point))
    except SystemExit:
        raise ConfigError(f"sweep: invalid bench run arguments: {shlex.join(['bench', *argv(sweep, point)])}") from None
    return cli.plan_runs(args)


def run_state(out: Path, run_id: str) -> str | None:
    """ok, failed, interrupted (Ctrl-C, or left ``running`` by a killed sweep or a lost node), or
    None (never started). Interrupted runs did not fail on their own, so they are simply run again."""
    path = records.run_dir(out, run_id) / "run.json"
    if not path.exists():
        return None
    record = records.read_json(path)
    if record.get("status") == "ok":
        return "ok"
    if record.get("status") == "failed" and record.get("error", {}).get("type") != "KeyboardInterrupt":
        return "failed"
    return "interrupted"


def should_run(state: str | None, force: bool = False, retry_failed: bool = False) -> bool:
    """ok: only when forced; failed: only when retrying failures; never started or interrupted: yes."""
    if state == "ok":
        return force
    if state == "failed":
        return force or retry_failed
    return True


def _unique(cfgs: list[RunConfig]) -> list[RunConfig]:
    return list({cfg.run_id: cfg for cfg in cfgs}.values())


def _tag(cfg: RunConfig, labels: dict[str, str] | None = None) -> str:
    settings = (labels or {}).get(cfg.run_id)
    tag = f"{cfg.method} on {'+'.join(cfg.train_tasks)} seed {cfg.seed}" + (f" [{settings}]" if settings else "")
    return tag + (f" (tuning: {cfg.validation} held out)" if cfg.validation else "")


IN_ORDER = ("local", "inline")  # executors that run one run at a time, in the order given


def _clock() -> str:
    return time.strftime("%H:%M:%S")


def launch(cfgs: list[RunConfig], executor: str, options: ExecutorOptions, job: Job, *, force: bool = False,
           retry_failed: bool = False, labels: dict[str, str] | None = None) -> int:
    """Hand the runs not done yet to the executor, one line per run; returns how many are not ok."""
    cfgs = _unique(cfgs)
    todo, failed = [], 0
    for i, cfg in enumerate(cfgs, 1):
        state = run_state(job.out, cfg.run_id)
        folder = records.run_dir(job.out, cfg.run_id)
        if should_run(state, force, retry_failed):
            todo.append(cfg)
        elif state == "ok":
            print(f"[{i}/{len(cfgs)}] {_tag(cfg, labels)}: already done, skipped ({folder})")
        else:
            failed += 1
            print(f"[{i}/{len(cfgs)}] {_tag(cfg, labels)}: failed before, skipped (--retry-failed reruns it; {folder})")
    if not todo:
        return failed
    print(f"running {len(todo)} run(s) with the {executor} executor", flush=True)
    finished = get(executor)(todo, job, options)
    for k in range(1, len(todo) + 1):
        if executor in IN_ORDER:  # the next run starts when the next outcome is asked for
            print(f"[{k}/{len(todo)}] {_tag(todo[k - 1], labels)}: started {_clock()} "
                  f"(steps: {records.run_dir(job.out, todo[k - 1].run_id) / 'steps.jsonl'})", flush=True)
        cfg, record = next(finished)
        folder = records.run_dir(job.out, cfg.run_id)
        if record.get("status") == "ok":
            print(f"[{k}/{len(todo)}] {_tag(cfg, labels)}: ok at {_clock()} -> {folder}", flush=True)
        else:
            failed += 1
            err = record.get("error", {})
            print(f"[{k}/{len(todo)}] {_tag(cfg, labels)}: FAILED ({err.get('type')}: {err.get('message', '')[:300]}); "
                  f"continuing -> {folder}", flush=True)
        records.rebuild_table(job.out)
    return failed


# -- selection ---------------------------------------------------------------------------

Group = tuple[str, str, tuple[tuple[str, str], ...], tuple[str, ...]]  # model, method, other settings, tasks


def _groups(sweep: Sweep) -> tuple[dict[Group, dict[str | None, list[RunConfig]]], dict[str, str]]:
    """Final runs per selection group and candidate value of the tuned key (in sweep order), and
    each run's settings as text (run id -> ``lr=0.0001 lora.r=8``) for the listings."""
    over = sweep.select.over if sweep.select else ""
    out: dict[Group, dict[str | None, list[RunConfig]]] = {}
    labels: dict[str, str] = {}
    for point in points(sweep):
        value = dict(point.settings).get(over)
        label = " ".join(f"{k}={v}" for k, v in point.settings)
        for cfg in plans(sweep, point):
            group = (point.model, point.method, point.without(over), cfg.train_tasks)
            out.setdefault(group, {}).setdefault(value, []).append(cfg)
            labels[cfg.run_id] = label
            if sweep.select:
                labels[dataclasses.replace(cfg, validation=sweep.select.validation).run_id] = label
    return out, labels


def _tuning(sweep: Sweep, candidates: dict[str | None, list[RunConfig]]) -> dict[str | None, list[RunConfig]]:
    """Per candidate value, its runs on the tuning seeds with training items held out."""
    select = sweep.select
    assert select is not None
    seeds = select.seeds or sweep.seeds[:1]
    return {value: [dataclasses.replace(cfg, validation=select.validation) for cfg in cfgs if cfg.seed in seeds]
            for value, cfgs in candidates.items()}


def _tuning_runs(sweep: Sweep, groups: dict[Group, dict[str | None, list[RunConfig]]]) -> list[RunConfig]:
    return [cfg for g in groups.values() if len(g) > 1 for cfgs in _tuning(sweep, g).values() for cfg in cfgs]


def _every_run(groups: dict[Group, dict[str | None, list[RunConfig]]]) -> list[RunConfig]:
    return [cfg for g in groups.values() for cfgs in g.values() for cfg in cfgs]


def val_score(out: Path, cfgs: list[RunConfig], metric: str) -> float | None:
    """Mean validation metric over the runs and their training tasks; None until all are ok."""
    name = metric.removeprefix("val_")
    values = []
    for cfg in cfgs:
        path = records.run_dir(out, cfg.run_id) / "run.json"
        record = records.read_json(path) if path.exists() else {}
        if record.get("status") != "ok":
            return None
        values += [m["value"] for e in record.get("evals", []) if e["phase"] == "val"
                   for m in e["metrics"] if m["name"] == name]
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


def choose(sweep: Sweep, out: Path, groups: dict[Group, dict[str | None, list[RunConfig]]]) -> list[Choice]:
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


def _finals(groups: dict[Group, dict[str | None, list[RunConfig]]], choices: list[Choice]) -> list[RunConfig]:
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
    records.atomic_write_text(path, pd.DataFrame(rows).to_csv(index=False))
    return path


# -- the whole sweep -----------------------------------------------------------------------

def run(sweep: Sweep, executor: str, options: ExecutorOptions, job: Job, retry_failed: bool = False
        ) -> tuple[list[RunConfig], int]:
    """Tuning runs (with ``select``), then the final runs; returns the final runs and the failures."""
    groups, labels = _groups(sweep)
    failed = 0
    if sweep.select:
        tuning = _tuning_runs(sweep, groups)
        if tuning:
            print(f"tuning {sweep.select.over}: {len(_unique(tuning))} run(s) with "
                  f"{sweep.select.validation} training items per task held out")
            failed += launch(tuning, executor, options, job, retry_failed=retry_failed, labels=labels)
        choices = choose(sweep, job.out, groups)
        print(selection_table(sweep, choices))
        print(f"selection written to {write_selection(sweep, job.out, choices)}")
        finals = _finals(groups, choices)
    else:
        finals = _every_run(groups)
    print(f"final runs: {len(_unique(finals))}")
    failed += launch(finals, executor, options, job, retry_failed=retry_failed, labels=labels)
    return _unique(finals), failed


def dry_run(sweep: Sweep, out: Path, retry_failed: bool = False) -> str:
    """Every run of the sweep with its status in ``out`` and what a submission would do with it."""
    groups, labels = _groups(sweep)
    lines: list[str] = []

    def listing(title: str, cfgs: list[RunConfig]) -> None:
        cfgs = _unique(cfgs)
        states = [run_state(out, cfg.run_id) for cfg in cfgs]
        todo = sum(should_run(s, retry_failed=retry_failed) for s in states)
        lines.append(f"{title}: {len(cfgs)} run(s), {todo} to run")
        for cfg, state in zip(cfgs, states):
            action = "run" if should_run(state, retry_failed=retry_failed) else (
                "skip (done)" if state == "ok" else "skip (failed; --retry-failed reruns it)")
            lines.append(f"  {cfg.run_id}  {_tag(cfg, labels)}  status={state or 'new'}  {action}")

    if sweep.select:
        listing(f"tuning runs ({sweep.select.over})", _tuning_runs(sweep, groups))
        choices = choose(sweep, out, groups)
        lines.append(selection_table(sweep, choices))
        pending = sum(not c.decided for c in choices)
        listing(f"final runs (decided so far; {pending} group(s) wait for tuning)", _finals(groups, choices))
    else:
        listing("runs", _every_run(groups))
    return "\n".join(lines)
