"""Where a run happened: package versions, torch build, device, CPU, RAM, git state."""
from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

PACKAGES = ["torch", "transformers", "peft", "lm_eval", "galore-torch", "pandas", "numpy", "peft-bench"]
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def describe_device(device: torch.device) -> dict[str, Any]:
    if device.type == "cuda":
        return {"type": "cuda", "name": torch.cuda.get_device_name(device), "count": torch.cuda.device_count()}
    return {"type": device.type, "name": _cpu_name(), "count": os.cpu_count(), "threads": torch.get_num_threads()}


def environment(device: torch.device) -> dict[str, Any]:
    commit = _git("rev-parse", "HEAD")
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "packages": {name: _version(name) for name in PACKAGES},
        "torch_build": {"version": torch.__version__, "cuda": torch.version.cuda, "debug": torch.version.debug},
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": describe_device(device),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "ram_bytes": _ram_bytes(),
        "git_commit": commit,
        "git_dirty": bool(dirty) if dirty is not None else None,
    }


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        from harness.config import ConfigError  # bad input: one line, before any run starts

        raise ConfigError(f"--device {name}: torch sees no CUDA device here (torch {torch.__version__}, "
                          f"built {'without CUDA' if torch.version.cuda is None else 'with CUDA ' + torch.version.cuda}); "
                          f"use --device cpu or auto")
    return device
