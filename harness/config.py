"""Run configuration: the trainer's knobs, the evaluation's, a method's hyperparameters, presets and ``--set``.

A ``RunConfig`` is fully resolved before anything runs; its ``run_id`` is a hash of that
resolved form, so two invocations that would do the same work share one run folder and the
second one is skipped (resume).
"""
from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from harness import checks
from harness.errors import ConfigError
from harness.schema import settings as catalogue
from harness.schema.record import normalized_config

if TYPE_CHECKING:  # the parser reads this module's defaults: it must not import torch (bench --help)
    import torch

    from methods.base import Artifacts, MethodSpec, TrainContext


@dataclass
class TrainConfig:
    """How the uniform driver trains (keys for ``--set KEY=VALUE`` without a method prefix).

    The default budget is sized for a 2-core CPU on the embedded 135M model; ``--preset paper``
    switches a method to its published GPU settings.
    """

    lr: float = 2e-4
    weight_decay: float = 0.0
    batch_size: int = 8  # examples per optimizer step
    micro_batch_size: int = 0  # examples per forward/backward; 0 = batch_size (no accumulation)
    max_length: int = 128  # tokens per training example (prompt truncated from the left)
    max_steps: int = 100  # optimizer steps (the main job's budget: README, "Two commands"); 0 = use epochs
    epochs: float = 0.0  # used when max_steps == 0
    warmup_steps: int = 0
    warmup_ratio: float = 0.1  # used when warmup_steps == 0
    min_lr_ratio: float = 0.0
    grad_clip: float = 1.0  # 0 disables clipping
    train_on_inputs: bool = False  # loss on prompt tokens too
    timing_warmup_steps: int = 3  # steps excluded from step-time statistics
    precision: str = "auto"  # auto = bf16 autocast on CUDA, fp32 on CPU; or fp32 / bf16

    def resolved_steps(self, n_train: int) -> int:
        if self.max_steps > 0:
            return self.max_steps
        if self.epochs <= 0:
            raise ConfigError("set --max-steps N or --epochs E (both are 0)")
        return max(1, int(-(-n_train * self.epochs // self.batch_size)))

    def resolved_warmup(self, steps: int) -> int:
        return self.warmup_steps if self.warmup_steps > 0 else int(self.warmup_ratio * steps)

    def micro(self) -> int:
        m = self.micro_batch_size or self.batch_size
        if self.batch_size % m:
            raise ConfigError(f"batch_size {self.batch_size} is not a multiple of micro_batch_size {m}")
        return m


@dataclass
class EvalConfig:
    """How a model is scored: the only keys ``bench eval --set`` takes, also ``--set`` keys of ``bench run``.

    Apart from ``TrainConfig`` because they change what is measured, not what is trained: a
    model-only evaluation has them and no training knobs, and reports compare runs that differ
    only here column by column instead of calling them different methods.
    """

    eval_batch_size: int = 32
    eval_limit: int = 100  # test items per task (the main job's budget); 0 = all
    num_beams: int = 1  # generation protocol: 1 = greedy (CPU default), 4 = LLM-Adapters' beam search
    max_new_tokens: int = 0  # generation protocol: 0 = the task's budget (32 choice tasks, 256 math)


EVAL_KEYS: tuple[str, ...] = catalogue.EVAL_KEYS


def method_context(train: TrainConfig, total_steps: int, seed: int, device: torch.device | str,
                   calibration_batches: Callable[[], Iterator[dict[str, torch.Tensor]]] | None = None,
                   artifacts: Artifacts | None = None) -> TrainContext:
    """What a method is told about the training it is prepared for: the one place trainer
    settings become a ``TrainContext`` (methods never see ``TrainConfig``: they never import the harness)."""
    from methods.base import TrainContext

    return TrainContext(lr=train.lr, weight_decay=train.weight_decay, warmup_steps=train.resolved_warmup(total_steps),
                        total_steps=total_steps, min_lr_ratio=train.min_lr_ratio, grad_clip=train.grad_clip or None,
                        seed=seed, device=str(device), calibration_batches=calibration_batches,
                        artifacts=artifacts)


@dataclass
class RunConfig:
    """One run: (model, method + hyperparameters, training tasks, seed) plus what it evaluates."""

    model: str
    method: str
    method_config: dict[str, Any]
    train_tasks: tuple[str, ...]
    eval_tasks: tuple[str, ...]
    seed: int = 0
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    protocol: str = "likelihood"  # tasks.protocols: likelihood or generate (resolved, never "auto")
    backend: str = "native"  # who evaluates: native (our scorer/generator) or lm-eval (its HFLM)
    retention_tasks: tuple[str, ...] = ()  # evaluated before and after, never trained on
    retention_text: str | None = None  # held-out text for LM-loss forgetting
    sequence: bool = False  # train_tasks are stages trained one after another (continued training)
    # training items per task held out (seeded, the same for every run) and scored after training
    # as phase "val": model selection (sweep ``select``) without ever looking at test items
    validation: int = 0
    adapter: str | None = None  # bench eval --adapter: a peft folder or saved delta applied to model
    num_fewshot: int | None = None  # --num-fewshot (None: zero-shot; an lm-eval:NAME task's own default)
    apply_chat_template: bool = False  # --apply-chat-template, as lm-eval's

    def stages(self) -> list[tuple[str, ...]]:
        return [(t,) for t in self.train_tasks] if self.sequence else [self.train_tasks]

    def setting(self, key: str) -> Any:
        """The value of a catalogued setting (``harness.schema.settings``), whoever owns it."""
        owner = catalogue.BY_KEY[key].owner
        holder = self.train if owner == catalogue.TRAINER else self.eval if owner == catalogue.EVAL else self
        value = getattr(holder, key)
        return list(value) if isinstance(value, tuple) else value

    def resolved(self) -> dict[str, Any]:
        """The config as records hold it: the run's settings, ``train`` (the trainer's keys) and
        ``eval`` (the evaluation's); a key marked ``omit_default`` is left out at its default."""
        defaults = _RUN_DEFAULTS
        out = {s.key: self.setting(s.key) for s in catalogue.SETTINGS if s.owner == catalogue.RUN
               and not (s.omit_default and self.setting(s.key) == defaults[s.key])}
        return {**out, "train": dataclasses.asdict(self.train), "eval": dataclasses.asdict(self.eval)}

    @property
    def run_id(self) -> str:
        """A hash of the resolved config in the layout run ids were first computed from (the
        evaluation keys inside ``train``), so a run recorded before the split keeps its folder."""
        identity = self.resolved()
        identity["train"] = {**identity["train"], **identity.pop("eval")}
        blob = json.dumps(identity, sort_keys=True, default=_jsonable)
        digest = hashlib.sha256(blob.encode()).hexdigest()[:10]
        tasks = "+".join(self.train_tasks) if len(self.train_tasks) <= 2 else f"{len(self.train_tasks)}tasks"
        safe = lambda s: "".join(c if c.isalnum() or c in "-_." else "-" for c in s)  # noqa: E731
        return f"{safe(self.model)}__{safe(self.method)}__{safe(tasks)}__s{self.seed}__{digest}"


_RUN_DEFAULTS = {f.name: f.default for f in dataclasses.fields(RunConfig) if f.default is not dataclasses.MISSING}


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    return str(obj)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A method config dataclass as plain JSON-able values (for records and the run id)."""
    out = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        out[f.name] = json.loads(json.dumps(value, default=_jsonable))
    return out


def parse_value(text: str, current: Any) -> Any:
    """Parse a ``--set`` value guided by the type of the current default."""
    low = text.strip().lower()
    if isinstance(current, bool) or low in ("true", "false"):
        if low in ("true", "1", "yes", "on"):
            return True
        if low in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"expected true/false, got {text!r}")
    if low in ("none", "null"):
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = text
    if isinstance(current, float) and isinstance(value, int):
        return float(value)
    if isinstance(current, int) and not isinstance(current, bool) and isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(current, (list, tuple)) and isinstance(value, str):
        return catalogue.comma_list(value)
    if current is not None and isinstance(current, (int, float)) and not isinstance(value, (int, float)):
        raise ConfigError(f"expected a number, got {text!r}")
    return value


def split_overrides(sets: list[str]) -> dict[str, Any]:
    """``["lora.r=16", "lr=3e-4"]`` -> ``{"lora.r": "16", "lr": "3e-4"}`` (values still text)."""
    out: dict[str, Any] = {}
    for item in sets:
        if "=" not in item:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = value
    return out


def apply_to_dataclass(obj: Any, key: str, value: Any, where: str) -> None:
    valid = [f.name for f in dataclasses.fields(obj)]
    if key not in valid:
        raise ConfigError(f"unknown key {key!r} for {where}; valid keys: {', '.join(valid) or 'none (it has no settings)'}")
    current = getattr(obj, key)
    if not isinstance(value, str):
        setattr(obj, key, value)
        return
    try:
        setattr(obj, key, parse_value(value, current))
    except ConfigError as err:
        raise ConfigError(f"{key!r} of {where}: {err} (default: {current!r})") from None


def build_configs(spec: MethodSpec, overrides: dict[str, Any], preset: str | None, base_train: TrainConfig,
                  base_eval: EvalConfig | None = None) -> tuple[Any, TrainConfig, EvalConfig]:
    """Resolve a method's config and the trainer and evaluation configs: defaults < preset < ``--set``.

    Override keys: ``lr`` or ``eval_limit`` (trainer or evaluation), ``<method>.r`` (this method
    only), ``trainer.lr``. Keys addressed to other methods in the same grid are ignored here
    (checked by the caller).
    """
    train = dataclasses.replace(base_train)
    evaluation = dataclasses.replace(base_eval or EvalConfig())
    method_cfg = spec.default_config()
    layered: list[tuple[str, dict[str, Any]]] = []
    if preset:
        if preset not in spec.presets:
            have = ", ".join(spec.presets) or "none"
            raise ConfigError(f"method {spec.name!r} has no preset {preset!r} (its presets: {have})")
        layered.append((f"preset {preset!r}", spec.presets[preset]))
    layered.append(("--set", overrides))
    holder = {**{f.name: train for f in dataclasses.fields(train)},
              **{f.name: evaluation for f in dataclasses.fields(evaluation)}}  # trainer key -> the config it sets
    for origin, values in layered:
        for key, value in values.items():
            if key.startswith(spec.name + "."):
                apply_to_dataclass(method_cfg, key[len(spec.name) + 1:], value, f"method {spec.name!r} ({origin})")
            elif key.startswith("trainer.") or "." not in key:
                name = key.removeprefix("trainer.")
                if name not in holder:
                    raise ConfigError(
                        f"unknown trainer key {name!r}; valid: {', '.join(sorted(holder))} "
                        f"(method keys take a prefix, e.g. {spec.name}.{(spec.config_keys() or ['r'])[0]})"
                    )
                apply_to_dataclass(holder[name], name, value, f"the trainer ({origin})")
    if hasattr(method_cfg, "__post_init__"):
        from methods.base import MethodConfigError

        try:
            method_cfg.__post_init__()  # re-validate: every method's config refuses bad values here
        except MethodConfigError as err:
            raise MethodConfigError(f"method {spec.name!r}: {err}") from None
    checks.check(train, "the trainer", checks.RULES)
    checks.check(evaluation, "the evaluation", checks.RULES)
    checks.check(method_cfg, f"method {spec.name!r}", checks.METHOD_RULES)
    return method_cfg, train, evaluation


def config_from_dict(cls: type, values: dict[str, Any]) -> Any:
    """Rebuild a method config from its recorded dict (only constructor fields are passed)."""
    default = cls()
    kwargs = {}
    for f in dataclasses.fields(cls):
        if not f.init or f.name not in values:
            continue
        value, current = values[f.name], getattr(default, f.name)
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            value = config_from_dict(type(current), value)  # nested configs (peft's runtime_config)
        kwargs[f.name] = value
    return cls(**kwargs)


def run_config_from_dict(d: dict[str, Any]) -> RunConfig:
    """Inverse of ``RunConfig.resolved`` (used to hand a run to a worker process); reads the
    older layout (evaluation keys inside ``train``) too."""
    d = normalized_config(d)
    return RunConfig(
        model=d["model"], method=d["method"], method_config=d["method_config"],
        train_tasks=tuple(d["train_tasks"]), eval_tasks=tuple(d["eval_tasks"]), seed=d["seed"],
        train=TrainConfig(**d["train"]), eval=EvalConfig(**d["eval"]),
        protocol=d.get("protocol", "likelihood"), backend=d.get("backend", "native"),
        retention_tasks=tuple(d.get("retention_tasks", ())), retention_text=d.get("retention_text"),
        sequence=d.get("sequence", False), validation=d.get("validation", 0), adapter=d.get("adapter"),
        num_fewshot=d.get("num_fewshot"), apply_chat_template=d.get("apply_chat_template", False),
    )
