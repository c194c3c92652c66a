"""Where task data comes from: a data folder verified against pinned checksums, or the hub.

The data folder is found in this order: an explicit argument (the CLI's ``--data-dir``), the
``PEFT_BENCH_DATA`` environment variable, then ``<project root>/../shared/data``. Files are
never copied into the repository. Every file read is checked against the SHA-256 its task file
pins (``tasks/configs``), so a run's numbers always refer to known bytes; ``TaskData.checksums`` carries them into run
records. The Hugging Face hub is a fallback only when files are missing and the user opted in
(``PEFT_BENCH_HUB=1`` or ``configure(hub=True)``): silently switching sources would change what
a benchmark number means.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = PROJECT_ROOT.parent / "shared" / "data"
DATA_ENV = "PEFT_BENCH_DATA"
HUB_ENV = "PEFT_BENCH_HUB"

class DataError(RuntimeError):
    """Task data is missing, differs from the pinned release, or is malformed.

    The message is meant for the user as is: it names the path(s) and how to supply the data.
    """


_settings: dict[str, Any] = {"data_dir": None, "hub": None}
_hash_cache: dict[tuple[str, int, int], str] = {}


def configure(data_dir: str | Path | None = None, hub: bool | None = None) -> None:
    """Set process-wide choices (the CLI calls this with ``--data-dir`` / ``--hub``)."""
    _settings["data_dir"] = data_dir
    _settings["hub"] = hub


def resolve_data_dir(explicit: str | Path | None = None) -> tuple[Path, str]:
    """The data folder and a few words on why it was chosen (for error messages)."""
    explicit = explicit if explicit is not None else _settings["data_dir"]
    if explicit is not None:
        return Path(explicit).expanduser(), "--data-dir"
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser(), DATA_ENV
    return DEFAULT_DATA_DIR, "default <project>/../shared/data"


def hub_enabled() -> bool:
    if _settings["hub"] is not None:
        return bool(_settings["hub"])
    return os.environ.get(HUB_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def sha256(path: Path) -> str:
    """SHA-256 of a file, computed once per process per (path, size, mtime)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _hash_cache:
        h = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _hash_cache[key] = h.hexdigest()
    return _hash_cache[key]


def how_to_supply(hub_hint: str | None = None) -> str:
    hub = (
        f"or set {HUB_ENV}=1 to load {hub_hint} from the Hugging Face hub on a machine that can reach it"
        if hub_hint
        else "(no hub source is known for it)"
    )
    return (
        f"Supply the data with --data-dir DIR or {DATA_ENV}=DIR, where DIR holds an unmodified copy of "
        f"the benchmark data folder (see its README.md and SHA256SUMS), {hub}."
    )


@dataclass
class DataSource:
    """A data folder, whether files are checked against the pins their task files give, and
    whether the hub may stand in for missing files. Tests build tiny folders (``verify=False``
    for files whose bytes no task file pins); real runs use ``current()``."""

    root: Path
    origin: str = "explicit"
    verify: bool = True
    hub: bool = False


def current(data_dir: str | Path | None = None) -> DataSource:
    """The source real runs use: resolved folder, pinned checksums, hub opt-in from settings."""
    root, origin = resolve_data_dir(data_dir)
    return DataSource(root=root, origin=origin, hub=hub_enabled())


def hub_rows(path: str, config: str | None, split: str) -> tuple[list[dict], str]:
    """Rows of one hub split and its fingerprint; any failure becomes a DataError saying so."""
    where = f"{path}{'/' + config if config else ''} split {split!r}"
    try:
        import datasets

        ds = datasets.load_dataset(path, config, split=split)
    except Exception as err:  # noqa: BLE001 - offline, missing package, renamed dataset: all one message
        first = str(err).strip().splitlines()[0][:300] if str(err).strip() else ""
        raise DataError(
            f"could not load {where} from the Hugging Face hub ({type(err).__name__}: {first}). The hub is "
            f"unreachable from this machine or the dataset changed; use the offline files instead: "
            f"--data-dir DIR or {DATA_ENV}=DIR"
        ) from None
    return [dict(r) for r in ds], str(getattr(ds, "_fingerprint", "unknown"))
