"""The rules that keep the results contract one contract, checked on the code itself.

* Import layering: ``harness.schema`` (figures, settings, the run record) imports nothing of the
  project above it, so every module may read it; ``tasks``/``methods`` never import ``harness``
  (``importcycles.py``'s rule, repeated here so the fast set enforces it); reports never import
  what runs or writes runs; only the CLI of the harness imports reports.
* ``harness.runfolder`` is the only writer of a run folder: every file opened for writing or
  renamed under ``runs/`` during a training run, an evaluation and a settled dead worker was
  written from it (an audit hook sees every ``open`` and rename, wherever it is called from).
* Every setting of the configs is in the settings catalogue, once, with the right owner.
"""
from __future__ import annotations

import ast
import dataclasses
import os
import sys
from pathlib import Path

import pytest

from harness import cli
from harness.config import EvalConfig, RunConfig, TrainConfig
from harness.schema import settings

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("harness", "methods", "tasks", "reports")


def _imports(path: Path, module: str) -> set[str]:
    """The project modules ``path`` imports (relative imports resolved), at any depth of the file."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            found |= {base} | {f"{base}.{a.name}" for a in node.names}
    return {name for name in found if name.split(".")[0] in PACKAGES}


def _modules() -> dict[str, Path]:
    out = {}
    for top in PACKAGES:
        for path in (ROOT / top).rglob("*.py"):
            out[".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")] = path
    return out


def _violations() -> list[str]:
    bad = []
    for module, path in _modules().items():
        for name in sorted(_imports(path, module)):
            top = module.split(".")[0]
            if module.startswith("harness.schema") and not name.startswith("harness.schema"):
                bad.append(f"{module} imports {name}: the schema imports nothing above it")
            elif top in ("tasks", "methods") and name.startswith("harness"):
                bad.append(f"{module} imports {name}: tasks and methods never import the harness")
            elif top == "reports" and name.split(".")[:2] in (["harness", m] for m in
                                                               ("driver", "runfolder", "launch", "executors", "cli",
                                                                "plan", "sweep", "trainer")):
                bad.append(f"{module} imports {name}: reports read records, never run or write them")
            elif top == "harness" and name.startswith("reports") and module != "harness.cli":
                bad.append(f"{module} imports {name}: only the CLI of the harness imports reports")
    return bad


def test_import_layering():
    assert _violations() == []


def test_the_layering_check_can_fail(tmp_path, monkeypatch):
    """The checker sees a violation: a schema module importing the driver."""
    fake = tmp_path / "harness" / "schema"
    fake.mkdir(parents=True)
    (fake / "bad.py").write_text("from harness import driver\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert _violations() == ["harness.schema.bad imports harness: the schema imports nothing above it",
                             "harness.schema.bad imports harness.driver: the schema imports nothing above it"]


def test_every_config_field_is_a_catalogued_setting_once():
    owners = {settings.TRAINER: TrainConfig, settings.EVAL: EvalConfig}
    for owner, cls in owners.items():
        assert set(settings.keys(owner)) == {f.name for f in dataclasses.fields(cls)}, owner
    run_fields = {f.name for f in dataclasses.fields(RunConfig)} - {"train", "eval"}
    assert set(settings.keys(settings.RUN)) == run_fields
    assert len(settings.SETTINGS) == len(settings.BY_KEY)  # no key twice
    # the derived sets the issue named: decoding keys are evaluation-only, measured-by has them
    assert {"num_beams", "max_new_tokens", "eval_limit"} <= set(settings.EVAL_ONLY_KEYS)
    assert {"num_beams", "max_new_tokens", "eval_limit", "protocol", "data_sha256"} <= set(settings.MEASURED_BY)


# -- the only writer ---------------------------------------------------------------------------

ALLOWED_WRITERS = {
    "harness.runfolder",  # run.json, steps.jsonl, samples, checkpoint, method files
    "harness.export",  # the saved model, into the folder RunFolder.saved_model names
    "harness.locks",  # the run folder's lock file
}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


class _Writes:
    """Who wrote under a folder while active: (our first caller module, path) per write."""

    def __init__(self) -> None:
        self.root: str | None = None
        self.seen: set[tuple[str, str]] = set()
        sys.addaudithook(self.hook)

    def hook(self, event: str, args: tuple) -> None:
        if self.root is None:
            return
        if event == "open":
            path, mode, flags = args
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & _WRITE_FLAGS)
            targets = [path] if writing else []
        elif event == "os.rename":  # os.rename and os.replace
            targets = [args[1]]
        else:
            return
        for target in targets:
            if isinstance(target, (str, os.PathLike)) and str(target).startswith(self.root):
                self.seen.add((self._caller(), str(target)))

    @staticmethod
    def _caller() -> str:
        frame = sys._getframe(2)
        while frame is not None:
            name = frame.f_globals.get("__name__", "")
            if name.split(".")[0] in (*PACKAGES, "tests") and name != "harness.safe_io":
                return name
            frame = frame.f_back
        return "?"


_WRITES = _Writes()


@pytest.fixture
def writes(tmp_path):
    _WRITES.root, _WRITES.seen = str(tmp_path / "runs"), set()
    yield _WRITES
    _WRITES.root = None


def test_only_the_run_folder_writes_run_folders(tmp_path, writes):
    base = ["--model", "tiny-llama", "--tasks", "synthetic", "--eval-limit", "8", "--no-progress", "--out", str(tmp_path)]
    assert cli.main(["run", *base, "--methods", "losia", "--max-steps", "2", "--executor", "inline",
                     "--set", "losia.period=1"]) == 0
    assert cli.main(["eval", *base]) == 0
    from harness.runfolder import settle

    cfg = RunConfig("tiny-llama", "lora", {}, ("synthetic",), ("synthetic",), seed=7)
    settle(cfg, tmp_path, "the worker was killed")  # a dead worker's run, recorded as failed
    assert {path.rsplit("/", 1)[-1] for _, path in writes.seen} >= {"run.json", "steps.jsonl", "subnets.jsonl"}
    strangers = sorted({(who, path) for who, path in writes.seen if who not in ALLOWED_WRITERS})
    assert strangers == []


def test_the_writer_check_sees_a_stranger(tmp_path, writes):
    from harness import safe_io

    safe_io.write_json(tmp_path / "runs" / "x" / "run.json", {})  # this test module is not the run folder
    assert {who for who, _ in writes.seen} == {__name__}
