"""Progress bars that read well in a terminal and in a log file.

tqdm redraws its bar in place with carriage returns. Where stderr is a file or a pipe (``> log
2>&1``, an executor capturing the output) every redraw stays in the file, and the bar's last
state is written twice: once by the last update and once more by ``close``; a log viewer shows
each ``\\r`` as a new line. So where stderr is not a terminal a bar prints plain lines instead:
one when it ends, and one at most every ``LOG_EVERY_S`` seconds while it runs.

Here rather than in the harness because the task scorers use it too (tasks/ never import the
harness).
"""
from __future__ import annotations

import sys
import time
from typing import Any, Iterable, Iterator

from tqdm.auto import tqdm

LOG_EVERY_S = 60.0  # seconds between a log-mode bar's lines while it runs


def bar(iterable: Iterable[Any] | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
        disable: bool = False) -> Any:
    """A tqdm bar on a terminal (or a disabled one); plain lines (``LogBar``) when stderr is not a terminal."""
    if disable or sys.stderr.isatty():
        return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, dynamic_ncols=True)
    return LogBar(iterable, total=total, desc=desc, unit=unit)


class LogBar:
    """The subset of tqdm's interface the project uses, writing whole lines: ``desc: n/total unit
    in T s (rate), postfix``; a context manager and an iterable like tqdm."""

    def __init__(self, iterable: Iterable[Any] | None = None, total: int | None = None, desc: str = "",
                 unit: str = "it") -> None:
        self.iterable, self.desc, self.unit = iterable, desc, unit
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.n, self.postfix, self.closed = 0, "", False
        self.start = self.last = time.monotonic()

    def __iter__(self) -> Iterator[Any]:
        try:
            for item in self.iterable or ():
                yield item
                self.update()
        finally:
            self.close()

    def __enter__(self) -> "LogBar":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        if time.monotonic() - self.last >= LOG_EVERY_S and (self.total is None or self.n < self.total):
            self._line()

    def set_postfix(self, refresh: bool = False, **values: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._line()

    def _line(self) -> None:
        self.last = time.monotonic()
        elapsed = self.last - self.start
        of = f"/{self.total}" if self.total is not None else ""
        rate = f", {elapsed / self.n:.3g} s/{self.unit}" if self.n else ""
        tail = f", {self.postfix}" if self.postfix else ""
        print(f"{self.desc}: {self.n}{of} {self.unit} in {elapsed:.1f} s{rate}{tail}", file=sys.stderr, flush=True)
