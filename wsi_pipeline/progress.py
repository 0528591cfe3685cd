"""Progress display that suits where the output goes.

On a terminal: a tqdm bar. When stderr is a file or a pipe (a log, CI, ``make demo | tee``): a plain
line every few seconds (``$WSI_PROGRESS_INTERVAL``, default 10 s) and no ``\\r`` frames. ``-q`` (or
``--no-progress``) silences both.

Example:
    >>> set_quiet(True)
    >>> with progress_bar(total=3, desc="tiling", unit="patch") as bar:
    ...     bar.update(3)
    >>> set_quiet(False)
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

from tqdm import tqdm

_QUIET = False


def set_quiet(quiet: bool) -> None:
    """Silence every progress display of this process (``-q``)."""
    global _QUIET
    _QUIET = bool(quiet)


def progress_enabled(stream: TextIO | None = None) -> bool:
    """True when progress should be drawn as a bar: not quiet and the stream is a terminal."""
    stream = stream or sys.stderr
    return not _QUIET and _isatty(stream)


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _interval() -> float:
    try:
        return max(0.0, float(os.environ.get("WSI_PROGRESS_INTERVAL", "10")))
    except ValueError:
        return 10.0


class LineProgress:
    """The part of tqdm's interface the pipeline uses, printing plain lines at most every ``interval`` s."""

    def __init__(self, iterable: Iterable | None = None, total: float | None = None, desc: str = "",
                 unit: str = "it", stream: TextIO | None = None, interval: float | None = None) -> None:
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total, self.desc, self.unit = total, desc, unit
        self.n = 0
        self.stream = stream or sys.stderr
        self.interval = _interval() if interval is None else interval
        self.postfix = ""
        self.started = self.last = time.monotonic()
        self.printed = False

    def _line(self, final: bool = False) -> None:
        elapsed = time.monotonic() - self.started
        of = f"/{self.total:g}" if self.total else ""
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        rate = ""
        if elapsed > 0 and self.n:
            per_s = self.n / elapsed
            rate = f", {per_s:.1f} {self.unit}/s" if per_s >= 1 else f", {elapsed / self.n:.1f} s/{self.unit}"
        extra = f" [{self.postfix}]" if self.postfix else ""
        state = "done: " if final else ""
        try:
            print(f"{self.desc}: {state}{self.n:g}{of} {self.unit}{pct} in {elapsed:.0f} s{rate}{extra}",
                  file=self.stream, flush=True)
        except (OSError, ValueError):  # a closed or full log must not stop the work
            pass
        self.printed = True
        self.last = time.monotonic()

    def update(self, n: float = 1) -> None:
        self.n += n
        if time.monotonic() - self.last >= self.interval:
            self._line()

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = s

    def set_description(self, desc: str = "", refresh: bool = True) -> None:
        self.desc = desc

    def close(self) -> None:
        if self.printed:
            self._line(final=True)
            self.printed = False

    def __iter__(self) -> Iterator:
        for item in self.iterable or ():
            yield item
            self.update(1)
        self.close()

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def progress_bar(iterable: Iterable | None = None, *, total: float | None = None, desc: str = "", unit: str = "it",
                 disable: bool = False, leave: bool = True, **kwargs: Any) -> Any:
    """A tqdm bar on a terminal, :class:`LineProgress` otherwise, nothing when disabled or quiet."""
    if disable or _QUIET:
        return tqdm(iterable, total=total, disable=True)
    if _isatty(sys.stderr):
        return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, **kwargs)
    return LineProgress(iterable, total=total, desc=desc, unit=unit)
