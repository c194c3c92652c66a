"""Where task data comes from: a data folder verified against pinned checksums, or the hub.

A data file is looked for in this order: an explicit argument (the CLI's ``--data-dir``), the
``PEFT_BENCH_DATA`` environment variable, ``<project root>/../shared/data``, then the user cache
(``$PEFT_BENCH_CACHE/data``); a pinned file found nowhere is downloaded from its upstream
repository into the cache (``tasks.download``: the same bytes, checked against the same pin),
and only when that fails too is it an error, one line naming every place tried. Files are
never copied into the repository. Every file read is checked against the SHA-256 its task file
pins (``tasks/configs``), so a run's numbers always refer to known bytes; ``TaskData.checksums`` carries them into run
records. The Hugging Face hub is a fallback only when files are missing and the user opted in
(``PEFT_BENCH_HUB=1``): silently switching sources would change what
a benchmark number means.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = PROJECT_ROOT.parent / "shared" / "data"
DATA_ENV = "PEFT_BENCH_DATA"
HUB_ENV = "PEFT_BENCH_HUB"

class DataError(RuntimeError):
    """Task data is missing, differs from the pinned release, or is malformed.

    The message is meant for the user as is: it names the path(s) and how to supply the data.
    """


_hash_cache: dict[tuple[str, int, int], str] = {}


def resolve_data_dir(explicit: str | Path | None = None) -> tuple[Path, str]:
    """The data folder and a few words on why it was chosen (for error messages). The CLI's
    ``--data-dir`` sets ``$PEFT_BENCH_DATA``, so worker processes see the same folder."""
    if explicit is not None:
        return Path(explicit).expanduser(), "--data-dir"
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser(), DATA_ENV
    return DEFAULT_DATA_DIR, "default <project>/../shared/data"


def hub_enabled() -> bool:
    """Whether the hub may be used as a fallback for missing files (``$PEFT_BENCH_HUB``)."""
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
    fallbacks: list[tuple[Path, str]] = field(default_factory=list)  # more folders, in order
    download: bool = False  # fetch a pinned file found nowhere into the user cache

    def find(self, rel: str, sha256: str = "") -> tuple[Path | None, list[str]]:
        """Where data file ``rel`` is (downloaded first when it is pinned and allowed), or None;
        and every place tried."""
        tried = []
        for root, origin in [(self.root, self.origin), *self.fallbacks]:
            if (root / rel).is_file():
                return root / rel, tried
            tried.append(f"{origin} {root}")
        if self.download and sha256:
            from tasks import download

            try:
                return download.fetch(rel, sha256), tried
            except download.DownloadError as err:
                tried.append(f"download: {err}")
        return None, tried


def current(data_dir: str | Path | None = None) -> DataSource:
    """The source real runs use: the folders in order, then a download into the user cache;
    pinned checksums; the hub's datasets only as the user's opt-in."""
    from tasks.download import cache_root

    root, origin = resolve_data_dir(data_dir)
    chain = [(root, origin)]
    if os.environ.get(DATA_ENV) and origin != DATA_ENV:
        chain.append((Path(os.environ[DATA_ENV]).expanduser(), DATA_ENV))
    chain += [(DEFAULT_DATA_DIR, "../shared/data"), (cache_root(), "the user cache")]
    chain = [(p, o) for i, (p, o) in enumerate(chain) if p not in [q for q, _ in chain[:i]]]
    return DataSource(root=chain[0][0], origin=chain[0][1], hub=hub_enabled(), fallbacks=chain[1:], download=True)


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
