"""The first seconds: the parser, --help and name typos never import torch (they answer at once)."""
from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from methods import registry

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "peft", "lm_eval")


def _python(code: str) -> dict:
    """Run ``code`` in a fresh interpreter; it prints a JSON line last."""
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_building_the_parser_imports_no_torch():
    out = _python("import sys, json, harness.cli\n"
                  "harness.cli.build_parser().format_help()\n"
                  f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))")
    assert out == []


@pytest.mark.parametrize("argv, message", [
    (["run", "--methods", "lora,lorra", "--tasks", "arc_e"], "unknown method 'lorra'; valid: adalora"),
    (["run", "--methods", "lora", "--tasks", "arc_ee"], "unknown task 'arc_ee'; valid tasks: boolq"),
    (["eval", "--tasks", "commonsens"], "unknown task 'commonsens'"),
])
def test_a_typo_is_one_line_without_importing_torch(tmp_path, argv, message):
    code = ("import contextlib, io, json, sys, harness.cli\n"
            "err = io.StringIO()\n"
            "with contextlib.redirect_stderr(err):\n"
            f"    rc = harness.cli.main({[*argv, '--out', str(tmp_path)]!r})\n"
            f"print(json.dumps([rc, err.getvalue(), [m for m in {HEAVY!r} if m in sys.modules]]))")
    rc, stderr, heavy = _python(code)
    assert rc == 2 and heavy == []
    assert stderr.startswith(f"bench: error: {message}") and stderr.count("\n") == 1


def test_the_method_name_list_is_what_the_modules_register():
    for module, listed in registry._MODULES.items():
        assert tuple(spec.name for spec in importlib.import_module(module).METHODS) == listed, module
