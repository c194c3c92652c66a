"""Records that may be damaged, and an output folder that may be full or unwritable.

A results folder outlives the processes that wrote it: a killed run, a full disk, a copy that
stopped half way or a hand edit can leave a ``run.json`` truncated, not UTF-8 or of the wrong
shape, a ``steps.jsonl`` with a half line, a ``checkpoint.pt`` that does not unpickle. One such
file must never stop a later command on the folder, so every record a command reads back goes
through this module: a damaged one is reported in one line that names the file and read as
"not there" (a run: not done, so it is run again; a report: left out, with a note).

Writing is the other half: a full disk or a read-only ``--out`` becomes one ``OutputError`` line
that says what to do, instead of a traceback, while everything already finished stays on disk.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

RUN_KEYS = {"run_id": str, "status": str, "config": dict}  # what every reader of run.json relies on
RUN_CONFIG_KEYS = {"model": str, "method": str, "train_tasks": list, "seed": int, "train": dict}
TEMP_PREFIXES = (".results.csv.", ".results.parquet.", ".run.json.", ".steps.jsonl.", ".checkpoint.pt.")

_warned: set[str] = set()
_UMASK = os.umask(0)
os.umask(_UMASK)


class OutputError(RuntimeError):
    """The output folder cannot take a write (disk full, read-only, not a folder); user-facing."""


def warn(message: str) -> None:
    """One line on stderr, once per process for the same message (a folder is read many times)."""
    if message not in _warned:
        _warned.add(message)
        print(f"bench: warning: {message}", file=sys.stderr, flush=True)


def _why(err: BaseException) -> str:
    if isinstance(err, UnicodeDecodeError):
        return "not UTF-8 text"
    if isinstance(err, json.JSONDecodeError):
        return f"not valid JSON (truncated?) at line {err.lineno}"
    return f"{type(err).__name__}: {str(err).splitlines()[0][:120] if str(err) else ''}".rstrip(": ")


def read_json(path: Path, check: Callable[[Any], str | None] | None = None, then: str = "ignored") -> Any | None:
    """The parsed file, or None when it is missing or damaged (a damaged one is reported).

    ``check`` returns what is wrong with the parsed value's shape (None when it is fine); ``then``
    ends the warning with what the caller does about it.
    """
    path = Path(path)
    try:
        value = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        warn(f"{path}: damaged ({_why(err)}); {then}")
        return None
    problem = check(value) if check else None
    if problem:
        warn(f"{path}: damaged ({problem}); {then}")
        return None
    return value


def run_record_problem(value: Any) -> str | None:
    """What is wrong with a parsed ``run.json`` for the readers of this project, or None."""
    if not isinstance(value, dict):
        return f"a JSON {type(value).__name__}, not an object"
    for keys, where in ((RUN_KEYS, value), (RUN_CONFIG_KEYS, value.get("config"))):
        for key, kind in keys.items():
            if not isinstance(where.get(key), kind):
                return f"{key!r} missing or not a {kind.__name__}"
    return None


def read_run(path: Path, then: str = "treated as not done (it will run again)") -> dict[str, Any] | None:
    """A run folder's ``run.json`` if it is whole and well-formed, else None (reported once)."""
    return read_json(path, run_record_problem, then)


def read_jsonl(path: Path, then: str = "kept the whole lines") -> list[dict[str, Any]]:
    """Every whole, well-formed line (an object) of a JSON-lines file; damaged lines are counted
    and reported in one line. A missing file reads as no lines."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as err:
        warn(f"{path}: unreadable ({_why(err)}); {then}")
        return []
    rows, bad = [], 0
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line.decode("utf-8"))
        except ValueError:
            bad += 1
            continue
        if isinstance(row, dict):
            rows.append(row)
        else:
            bad += 1
    if bad:
        warn(f"{path}: {bad} damaged line(s) skipped; {then}")
    return rows


def load_checkpoint(path: Path, map_location: Any) -> dict[str, Any] | None:
    """A stage checkpoint as tensors only (``weights_only``: a planted pickle runs no code), or
    None when it is damaged: reported and removed; without the state after the last finished
    stage the caller starts the sequence over."""
    import torch

    path = Path(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
        if not isinstance(state, dict):
            raise ValueError(f"a {type(state).__name__}, not a state dict")
        return state
    except FileNotFoundError:
        return None
    except Exception as err:  # noqa: BLE001 - any unpickling failure means the same: unusable
        warn(f"{path}: damaged checkpoint ({_why(err)}); discarded, the sequence starts over")
        path.unlink(missing_ok=True)
        return None


WRITE_ERRNOS = {
    errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the filesystem is read-only", errno.EACCES: "permission denied",
    errno.EPERM: "permission denied", errno.ENOTDIR: "a path component is a file, not a folder",
    errno.EEXIST: "a file is in the way",
}


def output_error(err: OSError, out: Path) -> OutputError | None:
    """The one-line error for a failed write under ``out``, or None when it is not about writing."""
    why = WRITE_ERRNOS.get(err.errno or 0)
    if why is None:
        return None
    where = err.filename or out
    return OutputError(f"cannot write {where}: {why}. Finished runs in {out} are kept; "
                       f"make room (or choose another --out) and rerun the same command to resume")


def check_out(out: Path) -> None:
    """Refuse, before anything runs, an ``--out`` that is a file or cannot be written."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} is a file, not a folder; give a folder (it is created if missing)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-probe.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise (output_error(err, out) or OutputError(f"--out {out}: {_why(err)}")) from None


def remove_temps(folder: Path) -> list[Path]:
    """Remove the temporary files an interrupted atomic write left in ``folder`` (not below).

    Call only while no other process can be writing there (under the folder's lock)."""
    gone = []
    for path in Path(folder).glob(".*"):
        if path.is_file() and path.name.startswith(TEMP_PREFIXES):
            path.unlink(missing_ok=True)
            gone.append(path)
    return gone


# -- atomic writes: the one implementation ----------------------------------------------------

@contextlib.contextmanager
def atomic(target: Path, folder: bool = False) -> Iterator[Path]:
    """A temporary path beside ``target`` (``.<name>.XXXX``) to write into; when the block ends
    it is renamed onto ``target`` (an existing folder is replaced), when it raises it is removed.
    So a reader, or a later run after a kill, sees the old file or the new one, never half of one.
    Nested blocks rename innermost first, after every write of the outer blocks has succeeded."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if folder:
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        if folder:
            share(tmp)
            shutil.rmtree(target, ignore_errors=True)  # a rerun replaces what the last one wrote
        else:
            os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are meant to be shared
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True) if folder else tmp.unlink(missing_ok=True)
        raise


def share(folder: Path) -> None:
    """Make a folder we wrote readable as the umask allows (0755/0644 under umask 022), like any
    file the user writes: ``mkdtemp`` makes folders 0700, which colleagues cannot read."""
    for path in [folder, *Path(folder).rglob("*")]:
        os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~_UMASK)


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (``atomic``)."""
    with atomic(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    write_text(path, "".join(json.dumps(r, default=str) + "\n" for r in rows))
