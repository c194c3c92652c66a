"""Shared fixtures and marks: tiny random models only, benchmark data only where marked.

``needs_data``: the test reads the offline benchmark data. The data folder is resolved once, as
the harness does it (``--data-dir``, else ``$PEFT_BENCH_DATA``, else ``../shared/data`` beside
the project); without a complete copy there, those tests are skipped with the reason, and with
one they run against that folder even when a test resets the environment.

Every other test runs with the data hidden: the data folder, ``../shared/data`` and the user
cache's data point at an empty folder and downloads are off, so a test that reads benchmark
data without the mark fails loudly here, not only on a clone without the data beside it. (A
worker process a test starts still finds ``../shared/data``: the hiding is in-process, plus the
environment it passes on.)
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as bench sets it (harness.cli), before torch loads OpenMP
import torch  # noqa: E402

from tasks import download, sources, taskfile  # noqa: E402

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

_data: dict[str, object] = {}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--data-dir", default=None, metavar="DIR",
                     help="offline benchmark data for tests marked needs_data (default: $PEFT_BENCH_DATA, "
                          "else ../shared/data beside the project)")


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--data-dir"):  # as --data-dir does for bench: every run in the session reads it
        os.environ[sources.DATA_ENV] = str(Path(config.getoption("--data-dir")).resolve())
    folder, why = sources.resolve_data_dir()
    pinned = taskfile.pinned_files()
    missing = [rel for rel in pinned if not (folder / rel).is_file()]
    _data.update(folder=folder.resolve(), skip=f"no benchmark data at {folder} ({why}): {len(missing)} of "
                 f"{len(pinned)} files missing; give --data-dir or ${sources.DATA_ENV}" if missing else "")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _data["skip"]:
        skip = pytest.mark.skip(reason=str(_data["skip"]))
        for item in items:
            if item.get_closest_marker("needs_data"):
                item.add_marker(skip)


@pytest.fixture(autouse=True)
def _configured_data(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
                     tmp_path_factory: pytest.TempPathFactory) -> None:
    """A needs_data test sees the configured folder through the environment (worker processes
    inherit it) and through ``sources`` (a test that clears the environment still finds it).
    Any other test sees no data at all (the module docstring)."""
    if request.node.get_closest_marker("needs_data"):
        folder = str(_data["folder"])
        monkeypatch.setenv(sources.DATA_ENV, folder)
        monkeypatch.setattr(sources, "DEFAULT_DATA_DIR", Path(folder))
        return
    empty = tmp_path_factory.getbasetemp() / "no-benchmark-data"
    empty.mkdir(exist_ok=True)
    monkeypatch.setenv(sources.DATA_ENV, str(empty))
    monkeypatch.setenv(download.OFFLINE_ENVS[0], "1")
    monkeypatch.delenv(sources.HUB_ENV, raising=False)
    monkeypatch.setattr(sources, "DEFAULT_DATA_DIR", empty)
    real_cache_root, user_cache = download.cache_root, os.environ.get("PEFT_BENCH_CACHE")
    # the user's data cache is hidden too, unless the test sets a cache of its own (download tests)
    monkeypatch.setattr(download, "cache_root", lambda: real_cache_root() if os.environ.get("PEFT_BENCH_CACHE")
                        != user_cache else empty / "user-cache")


@pytest.fixture
def data_dir() -> Path:
    """The configured benchmark data folder (tests that read its files directly)."""
    return Path(str(_data["folder"]))


@pytest.fixture
def tiny_model():
    from harness.models import load_model

    return load_model("tiny-llama")
