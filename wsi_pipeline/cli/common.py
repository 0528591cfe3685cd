"""Shared CLI plumbing: logging a lab technician can read, and one-line errors."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from .. import RESEARCH_NOTICE
from ..errors import WsiError

__all__ = ["RESEARCH_NOTICE", "HelpFormatter", "add_verbosity", "run_guarded", "setup_logging"]


def setup_logging(verbosity: int = 0) -> None:
    """INFO by default (plain sentences), DEBUG with -v, WARNING with -q."""
    level = logging.DEBUG if verbosity > 0 else logging.WARNING if verbosity < 0 else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)-7s %(message)s", datefmt="%H:%M:%S", force=True)
    for noisy in ("distributed", "asyncio", "PIL", "matplotlib", "numcodecs", "zarr", "fsspec"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def add_verbosity(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    parser.add_argument("-q", "--quiet", action="count", default=0, help="less log output")


def run_guarded(func: Callable[[], int | None]) -> int:
    """Run a command; a :class:`WsiError` becomes ``error: <file>: <reason>`` and exit code 1."""
    try:
        return int(func() or 0)
    except WsiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keep the examples in epilogs as written and show defaults."""
