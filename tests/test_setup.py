"""Install and first commands: declared dependencies, extras named in one line, --version, TOML on
3.10, an unavailable device."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from harness.cli import main

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

PYPROJECT = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())


def test_imported_packages_are_declared_and_galore_is_an_extra():
    deps = " ".join(PYPROJECT["project"]["dependencies"])
    for name in ("scipy", "datasets", "safetensors", "tomli"):
        assert name in deps
    assert "galore" not in deps
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert {"galore", "tensorboard", "mlflow", "wandb"} <= set(extras)


def test_bench_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"bench {PYPROJECT['project']['version']}"


def test_missing_galore_is_one_line_naming_the_extra(tmp_path, capsys, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "galore_torch" else real(name, *a))
    code = main(["run", "--methods", "galore", "--tasks", "arc_e", "--model", "tiny-llama", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert err == "bench: error: method 'galore' needs galore_torch, which is not installed: pip install 'peft-bench[galore]'"
    assert main(["list", "methods"]) == 0
    assert "galore                 (method 'galore' needs galore_torch" in capsys.readouterr().out


def test_toml_sweeps_fall_back_to_tomli_on_310(tmp_path, monkeypatch):
    """Python 3.10 has no tomllib; the sweep reader takes tomli, the same parser."""
    from harness.sweep import file as sweep_file

    monkeypatch.setitem(sys.modules, "tomllib", None)  # import tomllib now raises ImportError
    monkeypatch.setitem(sys.modules, "tomli", tomllib)
    path = tmp_path / "s.toml"
    path.write_text('methods = ["lora"]\ntasks = ["arc_e"]\n')
    assert sweep_file._read(path) == {"methods": ["lora"], "tasks": ["arc_e"]}


@pytest.mark.parametrize("command", [["run", "--methods", "lora", "--tasks", "synthetic"],
                                     ["eval", "--tasks", "synthetic"]])
def test_cuda_without_cuda_is_one_line(tmp_path, capsys, monkeypatch, command):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code = main([*command, "--model", "tiny-llama", "--device", "cuda", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and err.startswith("bench: error: --device cuda: this torch sees no CUDA device")
    assert not (tmp_path / "runs").exists()
