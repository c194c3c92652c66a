"""The verdict of ``bench perf --check``: does a method's step regress against the baseline?

Timing figures gate only as *ratios to the frozen floor* measured in the same process, one ratio
per interleaved round. A method's ratio regresses only when both hold:

* evidence: a one-sided Mann-Whitney U test says this run's per-round ratios are higher than
  the baseline's (p < ``ALPHA``): a rank test, so one disturbed round cannot carry it;
* size: the median ratio grew by more than the threshold (``THRESHOLD`` against this machine's
  own baseline entry, ``OTHER_MACHINE_THRESHOLD`` against another CPU's, since ratios at tiny
  shapes move ~15% between CPU models).

Either alone raises false alarms: many rounds make a 2% drift significant, and a single median
wobbles by more than 10% on a loaded machine. A method that meets both is only a suspect: the
command re-measures it at once over more rounds (interleaved with the floor) and it fails only if
that measurement regresses too (asv's "a regression must persist"); the summary says so.

Deterministic figures (bytes, trainable parameters, FLOPs) gate within ``EXACT_TOL``; hardware
instruction counts per step, where both runs have them on the same machine, within
``INSTRUCTIONS_TOL``. Absolute step times are reported, never gated: they follow the load.
"""
from __future__ import annotations

import math
import os
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scipy.stats import mannwhitneyu

from harness import metrics
from harness.perf.baseline import BaselineError, entry_for, machine_key, setup_differences

ALPHA = 0.01
THRESHOLD = 0.15
OTHER_MACHINE_THRESHOLD = 0.25
RECHECK_FACTOR = 2  # a suspect is re-measured over this many times the baseline's rounds
EXACT = metrics.names("exact")  # the catalogue's deterministic figures
EXACT_TOL = 0.01  # deterministic figures: 1% slack for library-version noise in saved tensors
INSTRUCTIONS_TOL = 0.03  # retired instructions vary a little with allocator and interpreter state
RATIO = "ratio_to_floor"


@dataclass
class Finding:
    method: str
    figure: str
    baseline: float
    measured: float
    limit: float
    regressed: bool
    p: float | None = None  # the rank test's one-sided p-value (ratio findings)
    recheck: str = ""  # what the re-measure of a suspect found

    @property
    def change(self) -> float:
        return self.measured / self.baseline - 1.0 if self.baseline else 0.0


@dataclass
class Comparison:
    findings: list[Finding]
    notes: list[str]
    entry: dict[str, Any]  # the baseline machine entry compared with
    threshold: float

    @property
    def failed(self) -> bool:
        return any(f.regressed for f in self.findings)

    def suspects(self) -> list[str]:
        return [f.method for f in self.findings if f.figure == RATIO and f.regressed and not f.recheck]


def ratio_finding(method: str, baseline: list[float], measured: list[float], threshold: float) -> Finding:
    """Evidence (rank test) and size (median growth) for one method's per-round ratios."""
    base, new = statistics.median(baseline), statistics.median(measured)
    p = float(mannwhitneyu(measured, baseline, alternative="greater").pvalue)
    limit = base * (1 + threshold)
    return Finding(method, RATIO, base, new, limit, p < ALPHA and new > limit, p)


def compare(baseline: dict[str, Any], measured: dict[str, Any]) -> Comparison:
    """Findings per (method, figure) and notes; raises BaselineError for another setup."""
    diffs = setup_differences(baseline["config"], measured["config"])
    if diffs:
        raise BaselineError("baseline was recorded with another setup (baseline vs now): " + "; ".join(diffs))
    key, entry, same = entry_for(baseline, measured["device"])
    threshold = THRESHOLD if same else OTHER_MACHINE_THRESHOLD
    notes = [] if same else [
        f"no baseline entry for this machine ({machine_key(measured['device'])!r}): compared with {key!r} at the "
        f"wider threshold +{threshold:.0%} (ratios move ~15% between CPU models); add one with --update"]
    findings: list[Finding] = []
    for method, base in entry["methods"].items():
        new = measured["methods"].get(method)
        if method == "floor":
            continue
        if new is None:
            notes.append(f"{method}: in the baseline but not measured")
            continue
        findings.append(ratio_finding(method, base["ratio_to_floor_rounds"], new["ratio_to_floor_rounds"], threshold))
        gated = [(k, EXACT_TOL) for k in EXACT] + ([("instructions_per_step", INSTRUCTIONS_TOL)] if same else [])
        for key_, tol in gated:
            if key_ in base and key_ in new:
                limit = base[key_] * (1 + tol)
                findings.append(Finding(method, key_, base[key_], new[key_], limit, new[key_] > limit))
    notes.append("instructions per step: " + (measured.get("instructions") or "not counted"))
    n, m = len(next(iter(entry["methods"].values()))["ratio_to_floor_rounds"]), measured["config"]["rounds"]
    if 1 / math.comb(n + m, n) >= ALPHA:
        notes.append(f"{n} baseline and {m} measured rounds cannot reach p < {ALPHA}: no ratio can fail; "
                     "use more rounds")
    notes += [f"{m}: measured but not in the baseline (run with --update to add it)"
              for m in measured["methods"] if m not in entry["methods"]]
    return Comparison(findings, notes, entry, threshold)


def confirm(comparison: Comparison, remeasured: dict[str, Any]) -> None:
    """Judge each suspect again on its re-measurement: it stays regressed only if that regresses too."""
    rounds = remeasured["config"]["rounds"]
    for f in comparison.findings:
        row = remeasured["methods"].get(f.method)
        if f.figure != RATIO or not f.regressed or row is None:
            continue
        again = ratio_finding(f.method, comparison.entry["methods"][f.method]["ratio_to_floor_rounds"],
                              row["ratio_to_floor_rounds"], comparison.threshold)
        f.recheck = (f"looked regressed ({f.change:+.1%}, p={f.p:.2g}); re-measured over {rounds} rounds: "
                     f"{again.change:+.1%}, p={again.p:.2g}, "
                     + ("regressed again" if again.regressed else "not confirmed"))
        f.regressed = again.regressed


def markdown(comparison: Comparison, baseline_path: Path | str) -> str:
    """The check's summary: ratio rows always, other figures only when they regressed."""
    shown = [f for f in comparison.findings if f.figure == RATIO or f.regressed]
    exact_ok = sum(1 for f in comparison.findings if f.figure != RATIO and not f.regressed)
    lines = [f"### bench perf --check {baseline_path}: {'FAIL' if comparison.failed else 'pass'}", "",
             f"A ratio regresses when its rounds are higher (one-sided Mann-Whitney U, p < {ALPHA}) and its "
             f"median grew by more than +{comparison.threshold:.0%}; a suspect is re-measured and must regress again.",
             "", "| method | figure | baseline | measured | change | limit | p | result |",
             "|---|---|---|---|---|---|---|---|"]
    for f in shown:
        result = "**REGRESSED**" if f.regressed else "ok"
        p = "" if f.p is None else f"{f.p:.2g}"
        lines.append(f"| {f.method} | {f.figure} | {f.baseline:.4g} | {f.measured:.4g} | {f.change:+.1%} | "
                     f"{f.limit:.4g} | {p} | {result + (': ' + f.recheck if f.recheck else '')} |")
    lines += ["", f"- {exact_ok} deterministic figures (bytes, trainable parameters, FLOPs, instructions) within "
                  "their tolerance"] + [f"- {n}" for n in comparison.notes]
    return "\n".join(lines) + "\n"


def publish(summary: str) -> None:
    """Append the Markdown summary to the CI job summary when one is offered (GitHub Actions)."""
    path = os.environ.get("GITHUB_STEP_SUMMARY")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(summary)
