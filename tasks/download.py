"""The pinned data files, fetched into the user cache when no data folder has them.

A user who cloned the project on a machine with internet expects ``bench run`` to find its data
by itself. The files are the very ones ``../shared/data`` holds (same repositories, same commits,
same bytes), so a download is verified against the same pinned SHA-256 and a benchmark number
keeps meaning the same thing wherever the data came from. A download goes to a temporary file
beside its target and is renamed into place only once its checksum matches, under a file lock,
so an interrupted or concurrent download never leaves a wrong file in the cache.

``PEFT_BENCH_OFFLINE=1`` (or ``HF_HUB_OFFLINE=1``) turns downloads off: the error then says so.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

OFFLINE_ENVS = ("PEFT_BENCH_OFFLINE", "HF_HUB_OFFLINE")
TIMEOUT_S = 30
LLM_ADAPTERS = "https://raw.githubusercontent.com/AGI-Edgerunners/LLM-Adapters/816657208af4db747803f87ba40a4c71383fed7a/"
GSM8K = "https://raw.githubusercontent.com/openai/grade-school-math/3101c7d5072418e28b9008a6636bde82a006892c/grade_school_math/data/"
HELLASWAG = "https://huggingface.co/datasets/klosax/hellaswag_text_data/resolve/1105d370f8340eac3c63a91fd1fa58e8999f9505/"

# a data-folder prefix -> where its files live upstream (the sources named in shared/data/README.md)
SOURCES = {"llm-adapters/": LLM_ADAPTERS, "gsm8k/": GSM8K, "hellaswag/": HELLASWAG}


class DownloadError(RuntimeError):
    """A file could not be fetched or did not match its checksum; the message says which and why."""


def cache_root() -> Path:
    """``$PEFT_BENCH_CACHE/data`` (default ``~/.cache/peft-bench/data``): beside the model cache."""
    return Path(os.environ.get("PEFT_BENCH_CACHE", Path.home() / ".cache" / "peft-bench")) / "data"


def offline() -> bool:
    return any(os.environ.get(k, "").strip().lower() in {"1", "true", "yes", "on"} for k in OFFLINE_ENVS)


def url_for(rel: str) -> str | None:
    """Upstream address of a data file (``rel`` as in the data folder), None when none is known."""
    for prefix, base in SOURCES.items():
        if rel.startswith(prefix):
            return base + rel[len(prefix):]
    return None


def fetch(rel: str, sha256: str, progress: bool = True) -> Path:
    """The cached copy of ``rel``, downloaded and verified first if it is not there yet."""
    from filelock import FileLock

    target = cache_root() / rel
    url = url_for(rel)
    if url is None:
        raise DownloadError(f"no download source is known for {rel}")
    if offline():
        raise DownloadError(f"downloads are off ({' / '.join(OFFLINE_ENVS)} set); would fetch {url}")
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if target.is_file() and _digest(target) == sha256:  # another process fetched it meanwhile
            return target
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                _download(url, fh, rel, progress)
            found = _digest(Path(tmp))
            if found != sha256:
                raise DownloadError(f"{url} has sha256 {found}, not the pinned {sha256}; not used")
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return target


def _download(url: str, fh, rel: str, progress: bool) -> None:
    from tqdm import tqdm

    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {rel}", disable=not progress) as bar:
                for block in iter(lambda: response.read(1 << 16), b""):
                    fh.write(block)
                    bar.update(len(block))
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", None) or err
        raise DownloadError(f"could not download {url} ({reason})") from None


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
