"""wsi: run one pipeline stage at a time.

Each stage reads and writes documented on-disk artifacts (docs/artifacts.md), so stages can be
run, tested and resumed alone. wsi-run chains them for whole slides.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .. import __version__
from .common import RESEARCH_NOTICE, HelpFormatter, add_verbosity, run_guarded, setup_logging

# one module per subcommand, each with register(subparsers)
SUBCOMMANDS = ["info", "tile", "synth", "data", "train", "evaluate", "model", "detect", "report", "review", "summarize"]

EPILOG = """examples:
  wsi info slide.svs
  wsi tile slide.svs --out work/slide
  wsi synth slide --out demo/ --size 8000
  wsi data composite configs/starter_data.yaml --out data/starter
  wsi train configs/train_demo.yaml
  wsi detect work/slide/patches.zarr --model model.pt --out work/slide
  wsi report work/slide/detections.parquet --out work/slide
  wsi review work/slide                                 # confirm / correct / reject the flagged cells

""" + RESEARCH_NOTICE


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wsi", description=__doc__, epilog=EPILOG, formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"wsi_pipeline {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMANDS:
        module = importlib.import_module(f"{__package__}.{name}")
        p = module.register(sub)
        add_verbosity(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose - args.quiet)
    return run_guarded(lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
