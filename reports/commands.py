"""The ``bench`` commands behind a set of runs, read from run.json (nothing new is stored).

A run.json with a ``command`` field (the argv of ``bench run``) is quoted as is. Older runs get
a reconstruction from their resolved config: the grid flags, every trainer value pinned with
``--set`` (exact at any commit), and the method's recorded settings listed beside it, because
which of them were overrides depends on the method defaults of the commit that ran it.
Runs from one grid (same model, trainer settings and tasks) are folded into one command.
"""
from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

from harness.schema.settings import FLAG_KEYS
from reports.load import Run

GRID_KEYS = set(FLAG_KEYS)  # keys with their own option, never --set
SUBCOMMANDS = {"run", "eval", "perf", "list", "report", "table"}


@dataclass
class Command:
    text: str
    recorded: bool
    run_ids: list[str] = field(default_factory=list)
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)  # method label -> recorded config
    commits: set[str] = field(default_factory=set)


def recorded_argv(record: dict[str, Any]) -> list[str] | None:
    """The stored ``command`` as argv starting with ``bench``; None when the run has none."""
    cmd = record.get("command")
    if isinstance(cmd, str):
        cmd = shlex.split(cmd)
    if not isinstance(cmd, list) or not cmd:
        return None
    argv = [str(a) for a in cmd]
    if PurePath(argv[0]).name in ("bench", "bench.exe"):
        return ["bench", *argv[1:]]
    return ["bench", *argv] if argv[0] in SUBCOMMANDS or argv[0].startswith("-") else argv


def _set_value(value: Any) -> str:
    """Text that ``harness.config.parse_value`` reads back as ``value``."""
    if isinstance(value, str):
        try:
            json.loads(value)
        except json.JSONDecodeError:
            return value
    return json.dumps(value)


def _grid_argv(cfg: dict[str, Any], device: str, methods: list[str], seeds: list[int], tasks: list[str],
               per_task: bool) -> list[str]:
    train = {**cfg.get("train", {}), **cfg.get("eval", {})}
    if cfg.get("method") == "none":
        return ["bench", "eval", "--model", cfg["model"], "--tasks", ",".join(cfg.get("eval_tasks", [])),
                "--eval-limit", str(train.get("eval_limit", 0)), "--device", device]
    budget = (["--max-steps", str(train["max_steps"])] if train.get("max_steps")
              else ["--epochs", f"{train.get('epochs', 0):g}"])
    argv = ["bench", "run", "--methods", ",".join(methods), "--model", cfg["model"], "--tasks", ",".join(tasks),
            *(["--per-task"] if per_task else []), "--seeds", ",".join(map(str, seeds)), *budget,
            "--eval-limit", str(train.get("eval_limit", 0)), "--device", device]
    for key, value in sorted(train.items()):
        if key not in GRID_KEYS:
            argv += ["--set", f"{key}={_set_value(value)}"]
    return argv


def commands(runs: list[Run]) -> list[Command]:
    """One entry per distinct recorded command, plus one reconstruction per grid of older runs."""
    out: dict[str, Command] = {}
    grids: dict[str, dict[str, Any]] = {}
    for run in sorted(runs, key=lambda r: r.run_id):
        commit = str(run.record.get("environment", {}).get("git_commit") or "?")[:12]
        argv = recorded_argv(run.record)
        if argv is not None:
            cmd = out.setdefault(shlex.join(argv), Command(shlex.join(argv), True))
            cmd.run_ids.append(run.run_id)
            cmd.commits.add(commit)
            continue
        cfg = run.config
        tasks = cfg.get("train_tasks", [])
        per_task = len(tasks) == 1 and cfg.get("eval_tasks") == tasks
        grid_key = json.dumps([cfg.get("model"), cfg.get("train"), cfg.get("eval"), cfg.get("protocol"), run.device.split(":")[0],
                               None if per_task else tasks, cfg.get("eval_tasks") if not per_task else None,
                               cfg.get("method") == "none"], sort_keys=True, default=str)
        grid = grids.setdefault(grid_key, {"cfg": cfg, "device": run.device.split(":")[0], "methods": {},
                                           "names": set(), "seeds": set(), "tasks": [], "runs": [], "commits": set()})
        grid["methods"][run.label] = cfg.get("method_config", {})
        grid["names"].add(cfg.get("method"))
        grid["seeds"].add(cfg.get("seed", 0))
        grid["tasks"] += [t for t in tasks if t not in grid["tasks"]]
        grid["runs"].append(run.run_id)
        grid["commits"].add(commit)
    for grid in grids.values():
        per_task = grid["cfg"].get("eval_tasks") == grid["cfg"].get("train_tasks") and len(grid["tasks"]) > 1 \
            and len(grid["cfg"].get("train_tasks", [])) == 1
        argv = _grid_argv(grid["cfg"], grid["device"], sorted(grid["names"]), sorted(grid["seeds"]),
                          grid["tasks"], per_task)
        out[shlex.join(argv)] = Command(shlex.join(argv), False, grid["runs"], grid["methods"], grid["commits"])
    return list(out.values())
