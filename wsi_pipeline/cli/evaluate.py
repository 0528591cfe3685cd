"""`wsi evaluate` (under construction; see the issue that builds it)."""

from __future__ import annotations

import argparse

from .common import HelpFormatter


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("evaluate", help="(under construction)", formatter_class=HelpFormatter)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    raise NotImplementedError("wsi evaluate is not built yet")
