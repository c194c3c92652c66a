"""Run one ``RunConfig`` end to end and write its records.

load data -> load model -> "before" evaluation (cached per model/task/protocol/data) ->
method.adapt (timed as calibration) -> for each stage: train (timed, memory tracked) ->
evaluate -> record. A plain run has one stage; ``--sequence`` runs one stage per task with one
continued model, checkpointing after every stage so an interrupted sequence resumes there.
Knows nothing about any particular method or task: it asks the registries.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from harness import machineload, records
from harness.config import ConfigError, RunConfig, TrainConfig, config_from_dict
from harness.data import TrainBatches
from harness.environment import environment
from harness.forgetting import backward_transfer, final_average, retention_forgetting, sequential_forgetting
from harness.measure import MemoryProbe, param_bytes, total_params
from harness.models import cache_dir, load_model, model_info
from harness.trainer import TrainResult, train
from methods import registry as method_registry
from methods.base import Adapted, TrainContext
from tasks import protocols
from tasks import registry as task_registry

EVAL_SCORER_VERSION = 2  # bump when scoring changes, so cached evaluations are not reused
TEXT_WINDOW, TEXT_MAX_WINDOWS = 256, 64
VALIDATION_SEED = 0  # held-out items do not depend on the run: every method is selected on the same ones


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _data_sha(checksums: dict[str, str]) -> str:
    """One digest over the checksums of every file a task read."""
    return hashlib.sha256(json.dumps(checksums, sort_keys=True).encode()).hexdigest()[:16]


def _cache_path(out: Path, kind: str, key_src: dict[str, Any]) -> Path:
    key = hashlib.sha256(json.dumps(key_src, sort_keys=True).encode()).hexdigest()[:20]
    return Path(out) / "cache" / kind / f"{records.file_name(key_src.get('task', 'text'))}-{key}.json"


def evaluate_task(model: torch.nn.Module, tokenizer: Any, task_name: str, cfg: RunConfig, phase: str,
                  device: torch.device, progress: bool, items: list[Any] | None = None
                  ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Evaluate one task under the run's protocol and backend; returns the eval summary (metrics
    with stderr, and how they were measured) and per-sample records. Backends keep exported
    files (lm-eval task YAML, named by a hash of their content) in the project cache."""
    task = task_registry.get(task_name)
    data = task_registry.load(task)
    tc = cfg.train
    if items is None:  # the test items; validation passes its held-out training items
        items = data.test[:tc.eval_limit] if tc.eval_limit else data.test
    settings = protocols.EvalSettings(batch_size=tc.eval_batch_size, device=device, progress=progress,
                                      num_beams=tc.num_beams, max_new_tokens=tc.max_new_tokens,
                                      workdir=cache_dir(), limit=tc.eval_limit)
    ev = protocols.evaluate(cfg.backend, cfg.protocol, model, tokenizer, task, items, settings)
    summary = {"task": task_name, "phase": phase, "metrics": ev.metrics, "protocol": ev.protocol,
               "backend": cfg.backend, "prompt": ev.prompt, "shots": ev.shots,
               "data_sha256": _data_sha(data.checksums), "chance": task.chance, "split_note": data.split_note,
               **({"settings": ev.extra} if ev.extra else {})}
    return summary, ev.samples


def cached_before_eval(out: Path, model: torch.nn.Module, tokenizer: Any, task_name: str, cfg: RunConfig,
                       device: torch.device, progress: bool) -> tuple[dict[str, Any], list[dict[str, Any]], bool]:
    """The "before" evaluation does not depend on the method: compute it once per model setup."""
    data = task_registry.load(task_registry.get(task_name))
    key_src = {"model": cfg.model, "task": task_name, "protocol": cfg.protocol, "backend": cfg.backend,
               "data": data.checksums, "eval_limit": cfg.train.eval_limit, "precision": cfg.train.precision,
               "num_beams": cfg.train.num_beams, "max_new_tokens": cfg.train.max_new_tokens,
               "scorer": EVAL_SCORER_VERSION, "device": device.type}
    path = _cache_path(out, "eval", key_src)
    if path.exists():
        cached = records.read_json(path)
        return cached["summary"], cached["samples"], True
    summary, samples = evaluate_task(model, tokenizer, task_name, cfg, "before", device, progress)
    records.atomic_write_json(path, {"key": key_src, "summary": summary, "samples": samples})
    return summary, samples, False


def text_loss(out: Path | None, model: torch.nn.Module, tokenizer: Any, cfg: RunConfig,
              device: torch.device) -> float:
    """Held-out LM loss; cached for the base model (``out`` given), computed fresh otherwise."""
    from tasks.heldout import mean_token_loss, text_windows
    from tasks.sources import sha256

    path = Path(cfg.retention_text)
    windows = text_windows(tokenizer, path, TEXT_WINDOW, TEXT_MAX_WINDOWS)
    if out is None:
        return mean_token_loss(model, windows, device)
    key_src = {"model": cfg.model, "text": sha256(path), "window": TEXT_WINDOW, "n": len(windows)}
    cache = _cache_path(out, "text", key_src)
    if cache.exists():
        return records.read_json(cache)["loss"]
    loss = mean_token_loss(model, windows, device)
    records.atomic_write_json(cache, {"key": key_src, "loss": loss})
    return loss


def run_one(cfg: RunConfig, out: Path, device: torch.device, progress: bool = True,
            command: str | None = None) -> dict[str, Any]:
    """Execute a run and write its folder; exceptions are recorded, never raised."""
    out = Path(out)
    folder = records.run_dir(out, cfg.run_id)
    record: dict[str, Any] = {"run_id": cfg.run_id, "status": "running", "config": cfg.resolved(),
                              "started": _now(), "model_note": model_info(cfg.model).note,
                              "environment": environment(device), "command": command}
    previous = _resumable(folder) if cfg.sequence else None
    if previous:
        done = len(previous["stages"])
        finished = {"before", *(f"stage-{k}" for k in range(1, done + 1))}
        record.update(stages=previous["stages"], evals=[e for e in previous["evals"] if e["phase"] in finished],
                      resumed_after_stage=done)
    records.atomic_write_json(folder / "run.json", record)
    steps: list[dict[str, Any]] = []
    if previous:  # keep the steps of finished stages only; the interrupted stage is trained again
        steps = [s for s in records.read_jsonl(folder / "steps.jsonl") if s.get("stage", 0) <= done]
    try:
        _execute(cfg, out, folder, device, record, steps, progress)
        record["status"] = "ok"
        (folder / "checkpoint.pt").unlink(missing_ok=True)
    except BaseException as err:  # record every failure, including OOM and KeyboardInterrupt
        record["status"] = "failed"
        record["error"] = {"type": type(err).__name__, "message": str(err)[:2000],
                           "traceback": traceback.format_exc()[-8000:]}
        if isinstance(err, KeyboardInterrupt):
            _write(folder, record, steps)
            raise
    finally:
        record["ended"] = _now()
        _write(folder, record, steps)
    return record


def _write(folder: Path, record: dict[str, Any], steps: list[dict[str, Any]]) -> None:
    if steps:
        records.atomic_write_jsonl(folder / "steps.jsonl", steps)
    records.atomic_write_json(folder / "run.json", record)


def _resumable(folder: Path) -> dict[str, Any] | None:
    """A sequence interrupted after some stage: its record, if the stage checkpoint survived."""
    path = folder / "run.json"
    if not (path.exists() and (folder / "checkpoint.pt").exists()):
        return None
    previous = records.read_json(path)
    return previous if previous.get("stages") and previous.get("status") != "ok" else None


def _stage_context(cfg: RunConfig, stage: tuple[str, ...], tokenizer: Any, device: torch.device,
                   seed: int) -> tuple[TrainBatches, int, TrainContext]:
    """Training batches, step count and method context for one stage's tasks (the protocol's text)."""
    tc = cfg.train
    train_pair = protocols.get(cfg.protocol).train_pair
    held = {ex for name in stage for ex in validation_items(cfg, name)}
    pairs = [train_pair(task, ex) for task, ex in task_registry.train_examples(stage) if ex not in held]
    batches = TrainBatches(pairs, tokenizer, tc.max_length, tc.batch_size, tc.micro(), seed, tc.train_on_inputs, device)
    n_steps = tc.resolved_steps(len(batches))

    def calibration() -> Any:  # a differently seeded pass over the same training items
        again = TrainBatches(pairs, tokenizer, tc.max_length, tc.batch_size, tc.micro(), seed + 1,
                             tc.train_on_inputs, device)
        return (mb for step in again for mb in step)

    ctx = TrainContext(lr=tc.lr, weight_decay=tc.weight_decay, warmup_steps=tc.resolved_warmup(n_steps),
                       total_steps=n_steps, min_lr_ratio=tc.min_lr_ratio, grad_clip=tc.grad_clip or None,
                       seed=seed, device=str(device), calibration_batches=calibration)
    return batches, n_steps, ctx


def _execute(cfg: RunConfig, out: Path, folder: Path, device: torch.device, record: dict[str, Any],
             steps: list[dict[str, Any]], progress: bool) -> None:
    torch.manual_seed(cfg.seed)
    spec = method_registry.get(cfg.method)
    eval_names = list(dict.fromkeys(cfg.eval_tasks + cfg.retention_tasks))
    record["data"] = {name: {"checksums": d.checksums, "split": d.split_note, "n_train": len(d.train),
                             "n_test": len(d.test)}
                      for name in dict.fromkeys(cfg.train_tasks + tuple(eval_names))
                      for d in [task_registry.load(task_registry.get(name))]}

    model, tokenizer = load_model(cfg.model)
    model.to(device)
    record["base_params"] = base_params = total_params(model)

    evals: list[dict[str, Any]] = record.setdefault("evals", [])
    if not record.get("stages"):
        for name in eval_names:
            summary, samples, hit = cached_before_eval(out, model, tokenizer, name, cfg, device, progress)
            evals.append({**summary, "cached": hit})
            records.atomic_write_jsonl(records.samples_path(folder, "before", name), samples)
    if cfg.retention_text:
        record["text_loss_before"] = text_loss(out, model, tokenizer, cfg, device)

    stages = cfg.stages()
    batches, n_steps, ctx = _stage_context(cfg, stages[0], tokenizer, device, cfg.seed)
    method_cfg = config_from_dict(spec.config_cls, cfg.method_config)
    calib = MemoryProbe(device)
    t0 = time.perf_counter()
    with calib.track():
        adapted = spec.adapt(model, method_cfg, ctx)
    calibration_time_s = time.perf_counter() - t0

    done = len(record.get("stages", []))
    if done:
        adapted.load_state_dict(torch.load(folder / "checkpoint.pt", map_location=device))
    results: list[TrainResult] = []
    loads: list[dict[str, Any]] = []  # machine load per training (harness.machineload)
    probe = MemoryProbe(device)
    tc = cfg.train
    for k, stage in enumerate(stages):
        if k < done:
            continue
        if k > 0:
            batches, n_steps, ctx = _stage_context(cfg, stage, tokenizer, device, cfg.seed + k)
            adapted.start_stage(ctx)
        profile_step = max(0, min(tc.timing_warmup_steps, n_steps) - 1) if not results else -1
        with probe.track(), machineload.track() as load:
            result = train(adapted, batches, n_steps, device, ctx.grad_clip, tc.precision, profile_step, progress)
        loads.append(load)
        results.append(result)
        steps.extend({**s, "stage": k + 1} if cfg.sequence else s for s in result.steps)
        phase = f"stage-{k + 1}" if cfg.sequence else "after"
        for name in eval_names:
            summary, samples = evaluate_task(adapted.for_eval(), tokenizer, name, cfg, phase, device, progress)
            evals.append(summary)
            records.atomic_write_jsonl(records.samples_path(folder, phase, name), samples)
        if cfg.sequence:
            record.setdefault("stages", []).append({"stage": k + 1, "tasks": list(stage), "steps": n_steps,
                                                    "train_time_s": result.train_time_s})
            if k + 1 < len(stages):
                _checkpoint(adapted, folder)
                _write(folder, record, steps)

    if cfg.validation:  # model selection: the held-out training items, never test items
        for name in cfg.train_tasks:
            summary, samples = evaluate_task(adapted.for_eval(), tokenizer, name, cfg, "val", device, progress,
                                             validation_items(cfg, name))
            evals.append(summary)
            records.atomic_write_jsonl(records.samples_path(folder, "val", name), samples)
    if cfg.retention_text:
        record["text_loss_after"] = text_loss(None, adapted.for_eval(), tokenizer, cfg, device)
    record["derived"] = derived_metrics(cfg, evals, record)
    record["costs"] = _costs(results, tc, probe, calibration_time_s, adapted, base_params) if results else {}
    if loads:
        record["load"] = machineload.combine(loads)
    record["calibration_memory"] = calib.figures
    record["method_record"] = adapted.record()
    record["train_config"] = dataclasses.asdict(tc)


def validation_items(cfg: RunConfig, task_name: str) -> list[Any]:
    """The ``cfg.validation`` training items of a task held out from training (fixed seed)."""
    if not cfg.validation:
        return []
    train = task_registry.load(task_registry.get(task_name)).train
    if cfg.validation >= len(train):
        raise ConfigError(f"validation {cfg.validation}: task {task_name} has only {len(train)} training items")
    return [train[i] for i in sorted(random.Random(VALIDATION_SEED).sample(range(len(train)), cfg.validation))]


def _checkpoint(adapted: Adapted, folder: Path) -> None:
    """Model state after a finished stage (adapters, subnet indices, weights), written atomically."""
    tmp = folder / ".checkpoint.pt.tmp"
    torch.save(adapted.state_dict(), tmp)
    tmp.replace(folder / "checkpoint.pt")


def _costs(results: list[TrainResult], tc: TrainConfig, probe: MemoryProbe, calibration_time_s: float,
           adapted: Adapted, base_params: int) -> dict[str, tuple[float, str]]:
    """The run's cost figures with their units (measurement.md), over every stage's steps."""
    first = results[0]
    merged = TrainResult(steps=[s for r in results for s in r.steps], profile=first.profile,
                         profiled_step=first.profiled_step)
    stats = merged.stats(tc.timing_warmup_steps)
    units = {"step_time_steps": "count", "tokens_per_s": "tokens/s"}
    trainable = adapted.trainable_params()
    last = merged.steps[-5:]
    return {
        **{k: (v, units.get(k, "s")) for k, v in stats.items()},
        "train_time_s": (sum(r.train_time_s for r in results), "s"),
        "calibration_time_s": (calibration_time_s, "s"),
        **{k: (v, "bytes") for k, v in probe.figures.items() if k.endswith("_bytes")},
        "trainable_params": (trainable, "count"),
        "total_params": (base_params, "count"),
        "trainable_pct": (100.0 * trainable / base_params, "%"),
        "param_bytes": (param_bytes(adapted.model), "bytes"),
        **{k: (v, "flops" if k.startswith("flops") else "bytes") for k, v in first.profile.items()},
        "final_loss": (sum(s["loss"] for s in last) / len(last), "nats"),
        "steps": (len(merged.steps), "count"),
    }


def derived_metrics(cfg: RunConfig, evals: list[dict[str, Any]], record: dict[str, Any]) -> list[dict[str, Any]]:
    """Forgetting figures (measurement.md): retention, sequential matrix, BWT, LM-loss change."""
    acc = {(e["task"], e["phase"]): next(m["value"] for m in e["metrics"] if m["name"] == "acc") for e in evals}
    last = f"stage-{len(cfg.train_tasks)}" if cfg.sequence else "after"
    out: list[dict[str, Any]] = []
    retention = [t for t in cfg.retention_tasks if (t, "before") in acc and (t, last) in acc]
    if retention:
        lost = retention_forgetting({t: acc[(t, "before")] for t in retention}, {t: acc[(t, last)] for t in retention})
        out += [{"task": t, "phase": last, "metric": "forgetting", "value": v, "unit": "fraction"} for t, v in lost.items()]
        out.append({"task": "retention-mean", "phase": last, "metric": "forgetting",
                    "value": sum(lost.values()) / len(lost), "unit": "fraction", "n": len(lost)})
    if cfg.sequence:
        seq = list(cfg.train_tasks)
        R = [[acc[(t, f"stage-{i + 1}")] for t in seq] for i in range(len(seq))]
        record["accuracy_matrix"] = {"rows": [f"stage-{i + 1}" for i in range(len(seq))], "cols": seq, "R": R}
        out.append({"task": "sequence", "phase": last, "metric": "final_avg_acc", "value": final_average(R),
                    "unit": "fraction"})
        out.append({"task": "sequence", "phase": last, "metric": "bwt", "value": backward_transfer(R),
                    "unit": "fraction"})
        out += [{"task": t, "phase": last, "metric": "forgetting", "value": v, "unit": "fraction"}
                for t, v in zip(seq, sequential_forgetting(R))]
    if "text_loss_before" in record and "text_loss_after" in record:
        out.append({"task": "retention-text", "phase": last, "metric": "lm_loss_forgetting",
                    "value": record["text_loss_after"] - record["text_loss_before"], "unit": "nats"})
    return out


def eval_only(model_name: str, task_names: list[str], train_cfg: Any, out: Path, device: torch.device,
              progress: bool = True, protocol: str = "likelihood", backend: str = "native") -> list[dict[str, Any]]:
    """``bench eval``: score a model without training; recorded as a run of method ``none``."""
    cfg = RunConfig(model=model_name, method="none", method_config={}, train_tasks=(), eval_tasks=tuple(task_names),
                    train=train_cfg, protocol=protocol, backend=backend)
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
        records.atomic_write_jsonl(records.samples_path(folder, "eval", name), samples)
    record.update(status="ok", ended=_now())
    records.atomic_write_json(folder / "run.json", record)
    records.rebuild_table(out)
    return record["evals"]
