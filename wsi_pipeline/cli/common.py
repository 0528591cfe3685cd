"""Shared CLI plumbing: logging a lab technician can read, and one-line errors."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from .. import RESEARCH_NOTICE
from ..diskspace import describe_os_error
from ..errors import ConfigError, WsiError
from ..progress import progress_enabled, set_quiet

__all__ = ["RESEARCH_NOTICE", "HelpFormatter", "add_verbosity", "run_guarded", "setup_logging"]


def setup_logging(verbosity: int = 0) -> None:
    """INFO by default (plain sentences), DEBUG with -v, WARNING with -q."""
    level = logging.DEBUG if verbosity > 0 else logging.WARNING if verbosity < 0 else logging.INFO
    set_quiet(verbosity < 0)  # -q also silences progress bars and progress lines
    if verbosity <= 0 and "cv2" in sys.modules:  # OpenCV's libtiff prints its own errors on a damaged file
        cv_log = getattr(getattr(sys.modules["cv2"], "utils", None), "logging", None)
        if cv_log is not None:
            cv_log.setLogLevel(cv_log.LOG_LEVEL_SILENT)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)-7s %(message)s", datefmt="%H:%M:%S", force=True)
    for noisy in ("distributed", "asyncio", "PIL", "matplotlib", "numcodecs", "zarr", "fsspec", "tifffile"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def add_verbosity(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    parser.add_argument("-q", "--quiet", action="count", default=0, help="less log output and no progress output")


class Terminated(BaseException):
    """SIGTERM arrived (a cluster scheduler or ``kill`` stopping the job); unwinds like Ctrl-C."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated()


def crash_log(exc: BaseException) -> Path | None:
    """Write the traceback of an unexpected exception to a log file; its path, or None if it cannot be written."""
    from ..fsutil import cache_dir  # noqa: PLC0415

    prog = Path(sys.argv[0]).stem if sys.argv and sys.argv[0] else ""
    prog = prog if prog.startswith("wsi") else "wsi"
    path = cache_dir() / "logs" / f"{prog}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{' '.join(sys.argv)}\n\n" + "".join(traceback.format_exception(exc)))
    except OSError:
        return None
    return path


def run_guarded(func: Callable[[], int | None]) -> int:
    """Run a command and turn every failure into one line on stderr.

    Exit status: 2 for a usage or configuration error (:class:`ConfigError`), 1 for a failure the
    user can act on (:class:`WsiError`, an I/O error), 130 for Ctrl-C, 143 for SIGTERM. Any other
    exception is a bug: one line plus the path of a log file holding the traceback.
    """
    previous = None
    try:
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread (e.g. called from a test runner's worker)
        pass
    try:
        return int(func() or 0)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except WsiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except Terminated:
        print("terminated (SIGTERM); rerun the same command to resume", file=sys.stderr)
        return 143
    except OSError as exc:
        logging.getLogger("wsi_pipeline").debug("I/O error", exc_info=True)
        print(f"error: {describe_os_error(exc)}", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug: keep the traceback out of the terminal, but keep it
        where = crash_log(exc)
        hint = f"; traceback in {where}" if where else ""
        print(f"error: unexpected {exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}{hint}",
              file=sys.stderr)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keep the examples in epilogs as written and show defaults.

    A default is shown once: not when the help already says it ("default ..."), and never as
    "(default: None)" or "(default: False)" for options whose absence means "not given".
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or action.default == [] or "default" in text.lower():
            return text
        return super()._get_help_string(action)
