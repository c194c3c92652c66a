"""Planning: what a ``bench run`` grid (or one point of a sweep) asks for -> validated ``RunConfig``s.

Every name, override and data file is checked here, before any run starts, so bad input is one
line and nothing is half done. ``bench run`` and sweeps plan through the same function, so a
sweep produces exactly the run ids of the equivalent ``bench run`` commands.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import checks
from harness.config import (EVAL_KEYS, ConfigError, EvalConfig, RunConfig, TrainConfig, apply_to_dataclass,
                            build_configs, config_from_dict, config_to_dict)
from methods import registry as method_registry
from methods.base import MethodConfigError
from tasks import protocols
from tasks import registry as task_registry


# what is scored besides the trained tasks unless asked: nothing. Every task scored costs two
# passes over its test items (before and after), so a one-task run evaluating the whole suite
# cost as much as eight; forgetting on other tasks is asked for (--retention auto or a list).
DEFAULT_RETENTION = "none"


@dataclass(frozen=True)
class Grid:
    """One ``bench run``: methods x seeds over tasks (or a sequence), with the budget and overrides.

    ``overrides`` are ``--set`` values as text (``{"lr": "3e-4", "lora.r": "16"}``); ``max_steps``,
    ``epochs`` and ``eval_limit`` are the budget options, applied before presets and overrides.
    """

    model: str
    methods: tuple[str, ...]
    tasks: str | None = None  # task names or suites, comma-separated
    sequence: str | None = None  # tasks trained in order with one model (instead of ``tasks``)
    seeds: tuple[int, ...] = (0,)
    per_task: bool = False
    retention: str = DEFAULT_RETENTION  # none, auto (the suite's other tasks), or tasks
    retention_text: Path | None = None
    preset: str | None = None
    overrides: dict[str, str] = field(default_factory=dict)
    max_steps: int | None = None
    epochs: float | None = None
    eval_limit: int | None = None
    protocol: str = "auto"
    backend: str = "native"
    num_fewshot: int | None = None  # --num-fewshot (prompt_options)
    apply_chat_template: bool = False


def runs(grid: Grid) -> list[RunConfig]:
    """Resolve the grid into RunConfigs, validating every name and override up front."""
    if not grid.methods:
        raise ConfigError("--methods names no method; see `bench list methods`")
    specs = [method_registry.get(m) for m in grid.methods]
    if bool(grid.tasks) == bool(grid.sequence):
        raise ConfigError("give either --tasks or --sequence (one of them, not both)")
    task_names = task_registry.expand(grid.sequence or grid.tasks)
    if grid.sequence and grid.per_task:
        raise ConfigError("--per-task does not apply to --sequence (a sequence is one model per method)")
    retention = retention_tasks(grid.retention, task_names)
    overrides = _addressed(grid.overrides, grid.methods, [s.name for s in specs])
    base_train, base_eval = TrainConfig(), EvalConfig()
    if grid.max_steps is not None:
        base_train.max_steps = grid.max_steps
    if grid.epochs is not None:
        base_train.max_steps, base_train.epochs = 0, grid.epochs
    if grid.eval_limit is not None:
        base_eval.eval_limit = grid.eval_limit
    groups = [(t,) for t in task_names] if grid.per_task else [tuple(task_names)]
    text = str(grid.retention_text.resolve()) if grid.retention_text else None
    protocol = check_tasks(task_names, retention, grid.protocol, grid.backend)
    prompting = prompt_options([*task_names, *retention], grid.num_fewshot, grid.apply_chat_template)
    for name in task_names:
        data = task_registry.load(name)
        if not data.train:
            raise ConfigError(f"task {name} has no training split ({data.split_note}); it can only be "
                              f"evaluated: bench eval, or --retention")
    plans = []
    for spec in specs:
        method_cfg, train, evaluation = build_configs(spec, overrides, grid.preset, base_train, base_eval)
        for group in groups:
            for seed in grid.seeds:
                kept = tuple(t for t in retention if t not in group)
                plans.append(RunConfig(model=grid.model, method=spec.name, method_config=config_to_dict(method_cfg),
                                       train_tasks=group, eval_tasks=group, seed=seed, train=train, eval=evaluation,
                                       protocol=protocol, backend=grid.backend, retention_tasks=kept,
                                       retention_text=text, sequence=bool(grid.sequence), **prompting))
    if text and not Path(text).is_file():
        raise ConfigError(f"--retention-text {text}: no such file")
    return plans


def check_on_models(plans: list[RunConfig]) -> None:
    """Every method config that a method can check against its model's shapes (LoSiA's
    ``init_subnets``), checked on a weightless skeleton before anything runs."""
    from harness.models import skeleton

    skeletons: dict[str, Any] = {}
    for cfg in plans:
        spec = method_registry.get(cfg.method)
        if spec.check_model is None:
            continue
        if cfg.model not in skeletons:
            skeletons[cfg.model] = skeleton(cfg.model)
        if skeletons[cfg.model] is not None:
            try:
                spec.check_model(skeletons[cfg.model], config_from_dict(spec.config_cls, cfg.method_config))
            except MethodConfigError as err:
                raise MethodConfigError(f"method {spec.name!r} on {cfg.model}: {err}") from None


def _addressed(overrides: dict[str, str], given: tuple[str, ...], registered: list[str]) -> dict[str, str]:
    """The overrides with each method prefix as registered (``peft:VeRA.r`` -> ``peft:vera.r``);
    a prefix that is no method of this run is refused, never silently dropped."""
    aliases = {**dict(zip(given, registered)), **{n: n for n in registered}, "trainer": "trainer"}
    out = {}
    for key, value in overrides.items():
        prefix, dot, rest = key.partition(".")
        if dot and prefix not in aliases:
            raise ConfigError(f"--set {key}: {prefix!r} is not a method in this run "
                              f"(methods: {', '.join(given)}; trainer keys take no prefix)")
        out[f"{aliases[prefix]}.{rest}" if dot else key] = value
    return out


def eval_run(model: str, task_text: str | None, eval_limit: int | None, overrides: dict[str, str],
             protocol: str, backend: str, adapter: str | None = None, num_fewshot: int | None = None,
             apply_chat_template: bool = False) -> RunConfig:
    """``bench eval``: the model-only run (method ``none``), with only evaluation keys settable;
    ``adapter``: a peft folder or saved delta applied to the model first (``models.resolve_model``)."""
    evaluation = EvalConfig()
    if eval_limit is not None:
        evaluation.eval_limit = eval_limit
    for key, value in overrides.items():
        if key not in EVAL_KEYS:
            raise ConfigError(f"bench eval --set {key}: not an evaluation key; valid: {', '.join(EVAL_KEYS)}")
        apply_to_dataclass(evaluation, key, value, "the evaluation")
    checks.check(evaluation, "the evaluation", checks.RULES)
    if not task_text:
        raise ConfigError("bench eval needs --tasks (task names or a suite such as commonsense)")
    names = tuple(task_registry.expand(task_text))
    resolved = check_tasks(list(names), (), protocol, backend)
    return RunConfig(model=model, method="none", method_config={}, train_tasks=(), eval_tasks=names,
                     eval=evaluation, protocol=resolved, backend=backend,
                     adapter=str(Path(adapter).resolve()) if adapter else None,
                     **prompt_options(list(names), num_fewshot, apply_chat_template))


def prompt_options(names: list[str], num_fewshot: int | None, apply_chat_template: bool) -> dict[str, object]:
    """``--num-fewshot`` / ``--apply-chat-template`` as RunConfig fields (every task: ``tasks.prompting``
    builds our own tasks' prompts, lm-eval an lm-eval:NAME task's); few-shot examples come from a
    task's train split, so a task without one is refused here, before anything runs."""
    if num_fewshot is None and not apply_chat_template:
        return {}
    if num_fewshot is not None and num_fewshot < 0:
        raise ConfigError(f"--num-fewshot must be >= 0, got {num_fewshot}")
    if num_fewshot:
        bare = [n for n in names if task_registry.get(n).extra.get("train_source") == "none"]  # lm-eval: its own
        if bare:
            raise ConfigError(f"--num-fewshot {num_fewshot}: few-shot examples come from a task's train split, and "
                              f"{', '.join(bare)} has none")
    return {"num_fewshot": num_fewshot, "apply_chat_template": apply_chat_template}


def check_tasks(names: list[str], retention: tuple[str, ...], protocol: str, backend: str) -> str:
    """Load every task (missing or corrupt data fails here, before any run starts) and resolve
    the protocol (auto: likelihood if every task has choices, else generate); refuse a task the
    protocol or backend cannot evaluate."""
    every = [task_registry.get(n) for n in dict.fromkeys([*names, *retention])]
    for task in every:
        task_registry.load(task)
    resolved = protocols.resolve(every, protocol)
    for task in every:
        protocols.check(task, resolved, backend)
    return resolved


def retention_tasks(option: str, trained: list[str]) -> tuple[str, ...]:
    """Retention tasks: explicit list, none, or (auto) the other tasks of the trained tasks' suites."""
    if option == "none":
        return ()
    if option != "auto":
        return tuple(task_registry.expand(option))
    suites = [members for members in task_registry.suites().values() if set(trained) & set(members)]
    return tuple(t for members in suites for t in members if t not in trained)
