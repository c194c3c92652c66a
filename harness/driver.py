"""Run one ``RunConfig`` end to end and write its records.

load data -> load model -> "before" evaluation (cached per model/task/protocol/data) ->
method.adapt (timed as calibration) -> train (timed, memory tracked) -> "after" evaluation ->
run folder. Knows nothing about any particular method or task: it asks the registries.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from harness import records
from harness.config import RunConfig, config_from_dict
from harness.data import TrainBatches
from harness.environment import environment
from harness.measure import MemoryProbe, param_bytes, total_params
from harness.models import load_model, model_info
from harness.trainer import train
from methods import registry as method_registry
from methods.base import TrainContext
from tasks import registry as task_registry
from tasks.likelihood import accuracy, score

EVAL_SCORER_VERSION = 1  # bump when scoring changes, so cached evaluations are not reused


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _data_sha(checksums: dict[str, str]) -> str:
    """One digest over the checksums of every file a task read."""
    return hashlib.sha256(json.dumps(checksums, sort_keys=True).encode()).hexdigest()[:16]


def evaluate_task(model: torch.nn.Module, tokenizer: Any, task_name: str, cfg: RunConfig, phase: str,
                  device: torch.device, progress: bool) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Score one task; returns the eval summary (metrics with stderr) and per-sample records."""
    task = task_registry.get(task_name)
    data = task_registry.load(task)
    limit = cfg.train.eval_limit
    items = data.test[:limit] if limit else data.test
    samples = score(model, tokenizer, task, items, batch_size=cfg.train.eval_batch_size, device=device,
                    progress=progress)
    metrics = []
    for name, key in (("acc", "correct"), ("acc_norm", "correct_norm")):
        acc, stderr, n = accuracy(samples, key)
        metrics.append({"name": name, "value": acc, "stderr": stderr, "n": n})
    summary = {"task": task_name, "phase": phase, "metrics": metrics, "protocol": cfg.protocol,
               "shots": 0, "data_sha256": _data_sha(data.checksums), "chance": task.chance,
               "split_note": data.split_note}
    return summary, samples


def cached_before_eval(out: Path, model: torch.nn.Module, tokenizer: Any, task_name: str, cfg: RunConfig,
                       device: torch.device, progress: bool) -> tuple[dict[str, Any], list[dict[str, Any]], bool]:
    """The "before" evaluation does not depend on the method: compute it once per model setup."""
    task = task_registry.get(task_name)
    data = task_registry.load(task)
    key_src = {"model": cfg.model, "task": task_name, "protocol": cfg.protocol, "data": data.checksums,
               "eval_limit": cfg.train.eval_limit, "precision": cfg.train.precision,
               "scorer": EVAL_SCORER_VERSION, "device": device.type}
    key = hashlib.sha256(json.dumps(key_src, sort_keys=True).encode()).hexdigest()[:20]
    path = Path(out) / "cache" / "eval" / f"{task_name}-{key}.json"
    if path.exists():
        cached = records.read_json(path)
        return cached["summary"], cached["samples"], True
    summary, samples = evaluate_task(model, tokenizer, task_name, cfg, "before", device, progress)
    records.atomic_write_json(path, {"key": key_src, "summary": summary, "samples": samples})
    return summary, samples, False


def run_one(cfg: RunConfig, out: Path, device: torch.device, progress: bool = True,
            command: str | None = None) -> dict[str, Any]:
    """Execute a run and write its folder; exceptions are recorded, never raised."""
    out = Path(out)
    folder = records.run_dir(out, cfg.run_id)
    record: dict[str, Any] = {"run_id": cfg.run_id, "status": "running", "config": cfg.resolved(),
                              "started": _now(), "model_note": model_info(cfg.model).note,
                              "environment": environment(device), "command": command}
    records.atomic_write_json(folder / "run.json", record)
    steps: list[dict[str, Any]] = []
    try:
        _execute(cfg, out, folder, device, record, steps, progress)
        record["status"] = "ok"
    except BaseException as err:  # record every failure, including OOM and KeyboardInterrupt
        record["status"] = "failed"
        record["error"] = {"type": type(err).__name__, "message": str(err)[:2000],
                           "traceback": traceback.format_exc()[-8000:]}
        if isinstance(err, KeyboardInterrupt):
            records.atomic_write_json(folder / "run.json", {**record, "ended": _now()})
            raise
    finally:
        record["ended"] = _now()
        if steps:
            records.atomic_write_jsonl(folder / "steps.jsonl", steps)
        records.atomic_write_json(folder / "run.json", record)
    return record


def _execute(cfg: RunConfig, out: Path, folder: Path, device: torch.device, record: dict[str, Any],
             steps: list[dict[str, Any]], progress: bool) -> None:
    torch.manual_seed(cfg.seed)
    spec = method_registry.get(cfg.method)
    train_tasks = [task_registry.get(name) for name in cfg.train_tasks]
    pairs = [t.train_pair(ex) for t in train_tasks for ex in task_registry.load(t).train]
    record["data"] = {t.name: {"checksums": task_registry.load(t).checksums, "split": task_registry.load(t).split_note,
                               "n_train": len(task_registry.load(t).train)} for t in train_tasks}

    model, tokenizer = load_model(cfg.model)
    model.to(device)
    record["base_params"] = base_params = total_params(model)

    evals: list[dict[str, Any]] = []
    for name in cfg.eval_tasks:
        summary, samples, hit = cached_before_eval(out, model, tokenizer, name, cfg, device, progress)
        evals.append({**summary, "cached": hit})
        records.atomic_write_jsonl(folder / "samples" / "before" / f"{name}.jsonl", samples)
    record["evals"] = evals

    tc = cfg.train
    batches = TrainBatches(pairs, tokenizer, tc.max_length, tc.batch_size, tc.micro(), cfg.seed,
                           tc.train_on_inputs, device)
    n_steps = tc.resolved_steps(len(batches))
    ctx = TrainContext(lr=tc.lr, weight_decay=tc.weight_decay, warmup_steps=tc.resolved_warmup(n_steps),
                       total_steps=n_steps, min_lr_ratio=tc.min_lr_ratio, grad_clip=tc.grad_clip or None,
                       seed=cfg.seed, device=str(device),
                       calibration_batches=lambda: (mb for step in TrainBatches(
                           pairs, tokenizer, tc.max_length, tc.batch_size, tc.micro(), cfg.seed + 1,
                           tc.train_on_inputs, device) for mb in step))
    method_cfg = config_from_dict(spec.config_cls, cfg.method_config)
    calib = MemoryProbe(device)
    t0 = time.perf_counter()
    with calib.track():
        adapted = spec.adapt(model, method_cfg, ctx)
    calibration_time_s = time.perf_counter() - t0

    probe = MemoryProbe(device)
    profile_step = max(0, min(tc.timing_warmup_steps, n_steps) - 1)
    with probe.track():
        result = train(adapted, batches, n_steps, device, ctx.grad_clip, tc.precision, profile_step, progress)
    steps.extend(result.steps)

    eval_model = adapted.for_eval()
    for name in cfg.eval_tasks:
        summary, samples = evaluate_task(eval_model, tokenizer, name, cfg, "after", device, progress)
        evals.append(summary)
        records.atomic_write_jsonl(folder / "samples" / "after" / f"{name}.jsonl", samples)

    trainable = adapted.trainable_params()
    mem_unit = {k: (v, "bytes") for k, v in probe.figures.items() if k.endswith("_bytes")}
    record["costs"] = {
        **{k: (v, "s" if k.startswith("step_time") and k != "step_time_steps" else "count" if k == "step_time_steps"
               else "tokens/s") for k, v in result.stats(tc.timing_warmup_steps).items()},
        "train_time_s": (result.train_time_s, "s"),
        "calibration_time_s": (calibration_time_s, "s"),
        **mem_unit,
        "trainable_params": (trainable, "count"),
        "total_params": (base_params, "count"),
        "trainable_pct": (100.0 * trainable / base_params, "%"),
        "param_bytes": (param_bytes(adapted.model), "bytes"),
        **{k: (v, "bytes" if k.endswith("bytes") else "flops") for k, v in result.profile.items()},
        "final_loss": (sum(s["loss"] for s in result.steps[-5:]) / len(result.steps[-5:]), "nats"),
        "steps": (n_steps, "count"),
    }
    record["calibration_memory"] = calib.figures
    record["profiled_step"] = profile_step
    record["method_record"] = adapted.record()
    record["train_config"] = dataclasses.asdict(tc)


def eval_only(model_name: str, task_names: list[str], train_cfg: Any, out: Path, device: torch.device,
              progress: bool = True) -> list[dict[str, Any]]:
    """``bench eval``: score a model without training; recorded as a run of method ``none``."""
    from harness.config import RunConfig

    cfg = RunConfig(model=model_name, method="none", method_config={}, train_tasks=(), eval_tasks=tuple(task_names),
                    train=train_cfg)
    for name in task_names:
        task_registry.load(task_registry.get(name))  # fail on missing data before loading the model
    folder = records.run_dir(out, cfg.run_id)
    record: dict[str, Any] = {"run_id": cfg.run_id, "status": "running", "config": cfg.resolved(),
                              "started": _now(), "model_note": model_info(model_name).note,
                              "environment": environment(device), "evals": []}
    model, tokenizer = load_model(model_name)
    model.to(device)
    for name in task_names:
        summary, samples = evaluate_task(model, tokenizer, name, cfg, "eval", device, progress)
        record["evals"].append(summary)
        records.atomic_write_jsonl(folder / "samples" / "eval" / f"{name}.jsonl", samples)
    record.update(status="ok", ended=_now())
    records.atomic_write_json(folder / "run.json", record)
    records.rebuild_table(out)
    return record["evals"]
