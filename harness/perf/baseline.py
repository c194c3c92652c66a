"""The committed speed baselines of ``bench perf --check``: file format, validation, per-machine entries.

One JSON file holds one setup (shape, batch, sequence length, ...) and one entry per machine it
was recorded on, keyed by :func:`machine_key` (CPU model and core count, or GPU name and count):
ratios to the floor depend on the processor (issue 18: +14-17% between an Intel Xeon and an AMD
EPYC at tiny shapes), so a check compares with its own machine's entry when there is one.

    {"format": 3, "config": {...setup...},
     "machines": {"AMD EPYC x2": {"device": {...}, "torch": "...", "recorded": "2026-...Z",
                                  "instructions": "...", "methods": {"lora": {"ratio_to_floor_rounds":
                                  [...], "ratio_to_floor": ..., "activation_bytes": ..., ...}, ...}}}}

A file is validated completely by :func:`load` before anything is measured, so a truncated,
foreign or old-format file costs one line, not a measurement. Files recorded with ``--clock cpu``
before CPU time had figures of its own (``step_cpu_time_s`` ...) stored it under the wall-clock
names; :func:`load` reads them under the CPU names, so no reader sees a CPU time called wall time.
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from harness import metrics
from harness.config import ConfigError

# 3: ratios from steps alternated one by one with the floor's (2 paired whole rounds: not comparable)
FORMAT = 3
# setup keys that must agree for ratios to be comparable (value assumed when a file lacks one)
SETUP_KEYS = {"shape": None, "batch_size": None, "seq_len": None, "start_step": 0, "overrides": {}, "threads": 0,
              "clock": "wall"}


class BaselineError(ConfigError):
    """A baseline file that cannot be used: printed as one line by the CLI."""


def dumps(baseline: dict[str, Any]) -> str:
    """Indented JSON with each list on one line, so a baseline reads (and diffs) one figure a line."""
    text = json.dumps(baseline, indent=2)
    return re.sub(r"\[\n\s+([^\[\]{}]*?)\n\s*\]", lambda m: "[" + re.sub(r",\n\s+", ", ", m.group(1)) + "]",
                  text) + "\n"


def machine_key(device: dict[str, Any]) -> str:
    return f"{device.get('name')} x{device.get('count')}"


def load(path: Path) -> dict[str, Any]:
    """The baseline at ``path``, checked for everything a comparison will read."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BaselineError(f"baseline {path} does not exist (record one with --check {path} --update)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BaselineError(f"baseline {path} is not readable JSON ({err})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format", "none") if isinstance(data, dict) else type(data).__name__
        raise BaselineError(f"baseline {path} is not a bench perf baseline of format {FORMAT} (format: {found}); "
                            f"re-record it with --update after deleting it")
    config, machines = data.get("config"), data.get("machines")
    if not isinstance(config, dict) or not isinstance(config.get("methods"), list) or \
            any(k not in config for k in ("shape", "batch_size", "seq_len", "rounds")):
        raise BaselineError(f"baseline {path}: 'config' lacks the setup (shape, batch_size, seq_len, rounds, methods)")
    if not isinstance(machines, dict) or not machines:
        raise BaselineError(f"baseline {path}: no machine entries under 'machines'")
    for key, entry in machines.items():
        methods = entry.get("methods") if isinstance(entry, dict) else None
        if not isinstance(methods, dict) or not isinstance(entry.get("device"), dict):
            raise BaselineError(f"baseline {path}: machine {key!r} lacks 'device' or 'methods'")
        for name, row in methods.items():
            rounds = row.get("ratio_to_floor_rounds") if isinstance(row, dict) else None
            if not isinstance(rounds, list) or len(rounds) < 2 or \
                    not all(isinstance(r, (int, float)) and r > 0 for r in rounds):
                raise BaselineError(f"baseline {path}: machine {key!r}, method {name!r} lacks per-round ratios "
                                    f"('ratio_to_floor_rounds', two or more positive numbers)")
            if config.get("clock") == "cpu":
                for wall, cpu in zip(metrics.CLOCK_FIGURES["wall"], metrics.CLOCK_FIGURES["cpu"]):
                    if wall in row:
                        row[cpu] = row.pop(wall)
    return data


def setup_differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    return [f"{k}: {a.get(k, d)} vs {b.get(k, d)}" for k, d in SETUP_KEYS.items() if a.get(k, d) != b.get(k, d)]


def entry_for(baseline: dict[str, Any], device: dict[str, Any]) -> tuple[str, dict[str, Any], bool]:
    """(key, entry, same machine): this machine's entry, else the first recorded one."""
    key = machine_key(device)
    if key in baseline["machines"]:
        return key, baseline["machines"][key], True
    first = next(iter(baseline["machines"]))
    return first, baseline["machines"][first], False


def with_measurement(baseline: dict[str, Any] | None, result: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The baseline with this machine's entry recorded from ``result`` (added or replaced).

    Entries of other machines are kept when their setup is the same; otherwise they are dropped
    (their ratios would not be comparable) and the notes say so.
    """
    config = {k: v for k, v in result["config"].items() if k not in ("device", "inject_slowdown")}
    entry = {"device": result["device"], "torch": result["torch"], "instructions": result["instructions"],
             "recorded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
             "measurements": result.get("measurements", 1), "methods": result["methods"]}
    machines, notes = {}, []
    if baseline is not None:
        if setup_differences(baseline["config"], config):
            notes = [f"dropped the entries of {', '.join(baseline['machines'])}: recorded with another setup "
                     f"({'; '.join(setup_differences(baseline['config'], config))})"]
        else:
            machines = dict(baseline["machines"])
    machines[machine_key(result["device"])] = entry
    return {"format": FORMAT, "config": config, "machines": machines}, notes
