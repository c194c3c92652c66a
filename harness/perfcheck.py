"""``bench perf --check``: compare a perf measurement with a committed baseline.

Only machine-independent figures gate: each method's step-time ratio to the frozen floor
(measured in the same process, interleaved rounds, median of rounds) and the deterministic
accounting figures (activation, gradient and optimizer-state bytes, trainable parameters,
FLOPs per step). The ratio tolerance is derived from the spread actually measured, so noise
widens it instead of raising false alarms: ``max(5%, 3 x spread)`` relative, with the spread
taken from the baseline and the new measurement, whichever is larger, capped at 50% so that a
busy machine cannot hide a large slowdown. Absolute step times gate
only when the baseline was recorded on the same device, and then with a wider tolerance.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RATIO_FLOOR_TOL = 0.05
SPREAD_FACTOR = 3.0
# however noisy the rounds, a median ratio that grew by half is a regression: without this cap a
# machine busy with other jobs widens the tolerance until even a 2x slowdown passes
RATIO_MAX_TOL = 0.5
ABS_TIME_TOL = 0.25
EXACT = ("activation_bytes", "grad_bytes", "optimizer_state_bytes", "trainable_params", "flops_per_step")
EXACT_TOL = 0.01  # deterministic figures: 1% slack for library-version noise in saved tensors


@dataclass
class Finding:
    method: str
    figure: str
    baseline: float
    measured: float
    limit: float
    regressed: bool

    @property
    def change(self) -> float:
        return self.measured / self.baseline - 1.0 if self.baseline else 0.0


def _same_setup(base: dict[str, Any], new: dict[str, Any]) -> list[str]:
    keys = {"shape": None, "batch_size": None, "seq_len": None, "start_step": 0}  # key -> value when absent
    return [f"{k}: baseline {base['config'].get(k, d)} vs now {new['config'].get(k, d)}"
            for k, d in keys.items() if base["config"].get(k, d) != new["config"].get(k, d)]


def compare(baseline: dict[str, Any], measured: dict[str, Any]) -> tuple[list[Finding], list[str]]:
    """Findings per (method, figure), and notes (methods missing, setup differences)."""
    notes = _same_setup(baseline, measured)
    if notes:
        raise ValueError("baseline was recorded with another setup: " + "; ".join(notes))
    same_device = baseline.get("device", {}).get("name") == measured.get("device", {}).get("name")
    findings: list[Finding] = []
    for method, base in baseline["methods"].items():
        if method == "floor":
            continue
        new = measured["methods"].get(method)
        if new is None:
            notes.append(f"{method}: in the baseline but not measured")
            continue
        spread = max(base.get("ratio_to_floor_spread", 0.0) / base["ratio_to_floor"],
                     new.get("ratio_to_floor_spread", 0.0) / new["ratio_to_floor"])
        tol = min(max(RATIO_FLOOR_TOL, SPREAD_FACTOR * spread), RATIO_MAX_TOL)
        limit = base["ratio_to_floor"] * (1 + tol)
        findings.append(Finding(method, "ratio_to_floor", base["ratio_to_floor"], new["ratio_to_floor"], limit,
                                new["ratio_to_floor"] > limit))
        for key in EXACT:
            if key in base and key in new:
                lim = base[key] * (1 + EXACT_TOL)
                findings.append(Finding(method, key, base[key], new[key], lim, new[key] > lim))
        if same_device:
            rel = (base["step_time_p90_s"] - base["step_time_p10_s"]) / 2 / base["step_time_s"]
            lim = base["step_time_s"] * (1 + max(ABS_TIME_TOL, SPREAD_FACTOR * rel))
            findings.append(Finding(method, "step_time_s", base["step_time_s"], new["step_time_s"], lim,
                                    new["step_time_s"] > lim))
    if not same_device:
        notes.append("absolute step times not gated: the baseline was recorded on "
                     f"{baseline.get('device', {}).get('name')!r}, this is {measured.get('device', {}).get('name')!r}")
    for method in measured["methods"]:
        if method not in baseline["methods"]:
            notes.append(f"{method}: measured but not in the baseline (run with --update to add it)")
    return findings, notes


def markdown(findings: list[Finding], notes: list[str], baseline_path: Path) -> str:
    bad = [f for f in findings if f.regressed]
    lines = [f"### bench perf --check {baseline_path}: {'FAIL' if bad else 'pass'}", "",
             "| method | figure | baseline | measured | change | limit | result |",
             "|---|---|---|---|---|---|---|"]
    for f in findings:
        fmt = (lambda v: f"{v:.4g}")
        lines.append(f"| {f.method} | {f.figure} | {fmt(f.baseline)} | {fmt(f.measured)} | {f.change:+.1%} | "
                     f"{fmt(f.limit)} | {'**REGRESSED**' if f.regressed else 'ok'} |")
    lines += [""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def publish(summary: str) -> None:
    """Append the Markdown summary to the CI job summary when one is offered (GitHub Actions)."""
    path = os.environ.get("GITHUB_STEP_SUMMARY")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(summary)


# what compare() and the perf setup read from a baseline: checked when it is loaded, so a damaged
# or foreign file is one line before minutes of measuring, not a KeyError after them
BASELINE_CONFIG = {"shape": str, "methods": list, "batch_size": int, "seq_len": int, "rounds": int,
                   "steps_per_round": int}
BASELINE_FIGURES = ("step_time_s", "step_time_p10_s", "step_time_p90_s", "ratio_to_floor")


def load(path: Path) -> dict[str, Any]:
    """A baseline written by ``--update``; anything else is a one-line ``ConfigError``."""
    from harness.config import ConfigError

    try:
        baseline = json.loads(Path(path).read_bytes().decode("utf-8"))
        problem = _baseline_problem(baseline)
    except UnicodeDecodeError:
        problem = "not UTF-8 text"
    except json.JSONDecodeError as err:
        problem = f"not valid JSON (truncated?) at line {err.lineno}"
    except OSError as err:
        problem = f"unreadable ({err.strerror or err})"
    if problem:
        raise ConfigError(f"baseline {path}: {problem}; not a bench perf baseline (record one with "
                          f"--check {path} --update)")
    return baseline


def _baseline_problem(baseline: Any) -> str | None:
    if not isinstance(baseline, dict):
        return f"a JSON {type(baseline).__name__}, not an object"
    config, methods = baseline.get("config"), baseline.get("methods")
    if not isinstance(config, dict) or not isinstance(methods, dict) or "floor" not in methods:
        return "no 'config' and 'methods' (with the floor)"
    for key, kind in BASELINE_CONFIG.items():
        if not isinstance(config.get(key), kind) or isinstance(config.get(key), bool):
            return f"config.{key} missing or not a {kind.__name__}"
    for name, figures in methods.items():
        if not isinstance(figures, dict):
            return f"methods.{name} is not an object"
        for key in BASELINE_FIGURES:
            value = figures.get(key)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or (key == "ratio_to_floor" and value <= 0):
                return f"methods.{name}.{key} missing or not a positive number"
    return None
