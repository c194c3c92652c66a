"""Where task data comes from: a data folder verified against pinned checksums, or the hub.

Each file is looked for in this order: an explicit argument (the CLI's ``--data-dir``), the
``PEFT_BENCH_DATA`` environment variable, ``<project root>/../shared/data``, then the user cache
(``$PEFT_BENCH_CACHE/data``); a file found nowhere is downloaded from its upstream repository
into the cache (``tasks.download``: the same bytes, checked against the same checksum), and
only when that fails too is it an error, one line naming every place tried. Files are never
copied into the repository. Every file read is checked against a SHA-256 pinned here, so
a run's numbers always refer to known bytes; ``TaskData.checksums`` carries them into run
records. The Hugging Face hub is a fallback only when files are missing and the user opted in
(``PEFT_BENCH_HUB=1`` or ``configure(hub=True)``): silently switching sources would change what
a benchmark number means.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = PROJECT_ROOT.parent / "shared" / "data"
DATA_ENV = "PEFT_BENCH_DATA"
HUB_ENV = "PEFT_BENCH_HUB"

# SHA-256 of every file the loaders read (from shared/data/SHA256SUMS).
PINNED: dict[str, str] = {
    "llm-adapters/dataset/boolq/test.json": "89df2397cbca81dc31adcc6f7f5b635821aa0565aafde46725b2b4bd39b4dfa9",
    "llm-adapters/dataset/boolq/train.json": "5ccbaceebaddc69765e1c4a363632196b81851d303696672165ab59ec4e48c83",
    "llm-adapters/dataset/piqa/test.json": "3860d11b9b42e590b6b4bbc1643214d373ed0b0d4ac62fcc7bdceb8e044ad141",
    "llm-adapters/dataset/social_i_qa/test.json": "71543f41127451945379d106ffedaef502f1c8770dff6d2f543aca85e3080b1d",
    "llm-adapters/dataset/winogrande/test.json": "6946f5209e7114c65c6d04f8f644c5a061af20d730b1cfe158fff3dc44076fb9",
    "llm-adapters/dataset/ARC-Easy/test.json": "3f32a84716ca6d57d38728bf80cc8117aecd17445c2cf29a68b571b810eb82dc",
    "llm-adapters/dataset/ARC-Easy/train.json": "6a06cece3dec32f4fb1c1b0fc29dab14be7cf3053b417290dbc6cd845359f5ff",
    "llm-adapters/dataset/ARC-Challenge/test.json": "4a89ce368ae01a71d268d9851686738b2a0a1d84271116bab49a1dd2b48ecad7",
    "llm-adapters/dataset/ARC-Challenge/train.json": "a9debff28aafed86a08211dc3584a3b6cb38edca8c56bb34cd5002ed54aeebfb",
    "llm-adapters/dataset/openbookqa/test.json": "8479930f7b8a26052c78250280b5465a4016ca7fc806af440d0f37e243f3099e",
    "llm-adapters/dataset/openbookqa/train.json": "a1e094eeea01f70c0baa880f37497b26700ae99b243927b9c529984de9b1fe90",
    "hellaswag/hellaswag_val_full.txt.bz2": "50b637899e4263c2bc456c2dc726c95d2c8cd8e2a552ea5bd7719ce3cb03fe5b",
    "llm-adapters/dataset/gsm8k/test.json": "2cc616a1e0b23ea1df29370476365cde71c4e0aa823fb06cc194c5a8a9381abe",
    "llm-adapters/dataset/AddSub/test.json": "62a8662b1ad40879953c4df0e61883a749d03aa3fc5e71f1cdb842b816e139ff",
    "llm-adapters/dataset/MultiArith/test.json": "a40f426807c8a563802c2a5b66bda3bcd1eba9c099038fd1199f0dd57de5fd28",
    "llm-adapters/dataset/SingleEq/test.json": "712b15edb851c97aab42a5de106d94008f94d917366c92537ed5400a8aacb207",
    "llm-adapters/ft-training_set/math_data.json": "1d06633b4db748b7cfa38f2891f8d7b17b3636717b3188dd382045b94cf999a7",
    "gsm8k/train.jsonl": "17f347dc51477c50d4efb83959dbb7c56297aba886e5544ee2aaed3024813465",
    "gsm8k/test.jsonl": "3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14",
}


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
    """A data folder plus the checksums its files must have.

    Tests build tiny folders with their own ``pinned`` dict (or ``verify=False``); real runs use
    ``current()``, which pins the released files.
    """

    root: Path
    origin: str = "explicit"
    verify: bool = True
    pinned: dict[str, str] = field(default_factory=lambda: dict(PINNED))
    hub: bool = False
    fallbacks: list[tuple[Path, str]] = field(default_factory=list)  # more folders, in order
    download: bool = False  # fetch a pinned file found nowhere into the user cache

    def places(self) -> list[tuple[Path, str]]:
        return [(self.root, self.origin), *self.fallbacks]

    def locate(self, rel: str) -> tuple[Path | None, list[str]]:
        """Where ``rel`` is (downloading it if allowed), or None and every place tried."""
        tried = []
        for root, origin in self.places():
            if (root / rel).is_file():
                return root / rel, tried
            tried.append(f"{origin} {root}")
        if self.download and rel in self.pinned:
            from tasks import download

            try:
                return download.fetch(rel, self.pinned[rel]), tried
            except download.DownloadError as err:
                tried.append(f"download: {err}")
        return None, tried

    def missing(self, rels: Iterable[str]) -> list[str]:
        return [r for r in rels if self.locate(r)[0] is None]

    def not_found(self, rel: str, what: str = "data", hub_hint: str | None = None) -> DataError:
        """The one-line error for a file found nowhere: every place tried, and how to supply it."""
        _, tried = self.locate(rel)
        return DataError(f"{what}: file {rel} not found; tried {'; '.join(tried)}. {how_to_supply(hub_hint)}")

    def checked(self, rel: str) -> tuple[Path, str]:
        """Path of a data file after verifying it; returns (path, sha256)."""
        path, _ = self.locate(rel)
        if path is None:
            raise self.not_found(rel)
        digest = sha256(path)
        if self.verify:
            expected = self.pinned.get(rel)
            if expected is None:
                raise DataError(f"no pinned checksum for {rel}; refusing to read {path} unverified")
            if digest != expected:
                raise DataError(
                    f"checksum mismatch for {path}: expected sha256 {expected}, found {digest}. The file "
                    f"differs from the pinned release (edited, truncated or another version). {how_to_supply()}"
                )
        return path, digest


def current(data_dir: str | Path | None = None) -> DataSource:
    """The source real runs use: the folders in order, then a download into the user cache;
    pinned checksums; the hub's converted datasets only as the user's opt-in."""
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
