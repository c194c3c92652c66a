"""Variant labels: the method name, plus the hyperparameters that tell its variants apart when the
same method ran with several configurations (``lora (r=8)`` vs ``lora (r=16)``).

Labels are what tables group on (results.csv's ``label`` column, every report), so runs are only
pooled across seeds, never across configurations, and two variants never share one label: a
label that would collide after shortening gets the variant's hash appended. An evaluation-only
run of an adapter (``bench eval --adapter DIR``) is labelled by that adapter, never as the base
model or as method ``none``.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import PurePath
from typing import Any

from harness.schema.record import normalized_config
from harness.schema.settings import EVAL_ONLY_KEYS


def _variant_fields(cfg: dict[str, Any]) -> dict[str, str]:
    """What was trained, flattened to text: every field that may distinguish two configurations."""
    cfg = normalized_config(cfg)  # older records kept the evaluation keys in ``train``
    tasks = cfg.get("train_tasks", [])
    out = {"train": "per-task" if len(tasks) == 1 else "+".join(tasks)}
    # only what was trained: the evaluation-only keys (``harness.schema.settings``) are checked per
    # table column (``reports.tables.drop_mixed``), never split into variants
    out.update({k: json.dumps(v, sort_keys=True) for k, v in cfg["train"].items() if k not in EVAL_ONLY_KEYS})
    out.update({k: json.dumps(v, sort_keys=True) for k, v in cfg.get("method_config", {}).items()})
    if cfg.get("adapter"):
        out["adapter"] = str(cfg["adapter"])
    return out


def _name(cfg: dict[str, Any]) -> str:
    """What a label starts with: the method, or for an evaluated adapter, the adapter: a run's saved
    model (``runs/<model>__<method>__<tasks>__s<seed>__<hash>/adapter``) by that run's method,
    tasks and seed, any other folder by its name."""
    if not (cfg.get("adapter") and not cfg.get("train_tasks")):
        return str(cfg.get("method", "?"))
    path = PurePath(str(cfg["adapter"]))
    parts = path.parent.name.split("__")
    if path.parent.parent.name == "runs" and len(parts) == 5:
        return f"adapter {parts[1]} ({parts[2]} {parts[3]})"
    return f"adapter {path.name}"


def _short(value: str, width: int = 24) -> str:
    value = value.replace('"', "")
    return value if len(value) <= width else value[: width - 1] + "…"


def variant_labels(configs: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Run id -> label, for runs given by their resolved configs (``run.json``'s ``config``)."""
    groups: dict[tuple[str, str], dict[str, dict[str, str]]] = {}
    keys: dict[str, str] = {}
    for run_id, cfg in configs.items():
        fields = _variant_fields(cfg)
        keys[run_id] = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:6]
        groups.setdefault((cfg.get("model", "?"), _name(cfg)), {})[keys[run_id]] = fields
    labels: dict[tuple[str, str, str], str] = {}
    for (model, method), variants in groups.items():
        for key, fields in variants.items():
            differing = sorted(k for k in fields if len({v.get(k) for v in variants.values()}) > 1)
            shown = ", ".join(f"{k}={_short(fields[k])}" for k in differing)
            labels[(model, method, key)] = f"{method} ({shown})" if shown else method
        if len(set(labels[(model, method, k)] for k in variants)) < len(variants):
            for key in variants:
                labels[(model, method, key)] += f" #{key}"
    return {run_id: labels[(cfg.get("model", "?"), _name(cfg), keys[run_id])]
            for run_id, cfg in configs.items()}
