"""``wsi summarize OUT``: cohort summary (summary.csv, index.html) from the slide folders under OUT."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import WsiError
from ..pipeline import collect_outcomes, write_summary
from .common import HelpFormatter

EPILOG = """examples:
  wsi summarize results/        # after wsi-run or the Snakemake workflow
"""


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("summarize", help="cohort summary of finished slides", description=__doc__, epilog=EPILOG,
                       formatter_class=HelpFormatter)
    p.add_argument("out", type=Path, help="output folder holding one sub-folder per slide")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    if not args.out.is_dir():
        raise WsiError(args.out, "no such output folder")
    outcomes = collect_outcomes(args.out)
    csv_path, index = write_summary(args.out, outcomes)
    print(f"{len(outcomes)} slides summarised: {csv_path}, {index}")
    return 0
