"""``wsi-run``: the whole pipeline (tiling -> detection -> report) for slides, a folder, or the demo.

This module only parses and prints; the batch itself runs in :func:`wsi_pipeline.pipeline.run_batch`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


from .. import __version__
from ..config import check_device, check_scheduler, check_workers_mpp, load_config
from ..errors import ConfigError, WsiError
from ..pipeline import RunOptions, find_slides, plan, run_batch, write_summary
from ..slide_formats import supported_text
from .common import RESEARCH_NOTICE, HelpFormatter, add_verbosity, run_guarded, setup_logging

log = logging.getLogger("wsi_pipeline.run")

EPILOG = """examples:
  wsi-run --demo                                  # synthetic slide with real cells + starter model, end to end
  wsi-run slide.svs --out results/                # one slide -> results/slide/report.html
  wsi-run slides/ --out results/                  # every slide in a folder; see results/index.html
  wsi-run 'scans/*.ndpi' list.txt --out results/  # globs and text files listing slides
  wsi-run slides/ --out results/ --dry-run        # plan only: slides, patches, disk
  wsi-run slides/ --out results/ --delete-store   # drop the patch store once a report exists
  wsi-run slides/ --out results/ --scheduler tcp://10.0.0.5:8786   # one task per slide on a Dask cluster

exit status: 0 all slides succeeded (or were skipped), 1 some failed (or the disk filled up),
2 usage error (bad option or config value), 130 Ctrl-C, 143 SIGTERM; rerun the same command to resume.
""" + RESEARCH_NOTICE


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="wsi-run", description="Screen whole-slide images: tile, detect cells, write a report per slide.",
        epilog=EPILOG, formatter_class=HelpFormatter,
    )
    p.add_argument("inputs", nargs="*", help="slide files, folders, globs, or .txt files listing slides")
    p.add_argument("--out", type=Path, default=Path("wsi_out"), help="output folder (one sub-folder per slide)")
    p.add_argument("--model", type=Path, default=None,
                   help="detector checkpoint from `wsi train` (default: the bundled starter model, docs/model_card.md)")
    p.add_argument("--config", type=Path, default=None, help="pipeline YAML overriding configs/default.yaml")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--scheduler", default=None,
                   help="tiling scheduler: threads | processes | synchronous, or a dask.distributed address "
                        "(tcp://HOST:PORT) to run one task per slide on that cluster")
    p.add_argument("--workers", type=int, default=None, help="tiling workers (default: all cores)")
    p.add_argument("--mpp", type=float, default=None, help="microns per pixel, for slides that do not record it")
    p.add_argument("--force", action="store_true", help="redo slides that already have a report")
    p.add_argument("--delete-store", action="store_true", help="delete each patch store once its report is written")
    p.add_argument("--dry-run", action="store_true", help="print the plan (slides, patches, disk) and exit")
    p.add_argument("--demo", action="store_true", help="generate a synthetic TCT slide and run the pipeline on it")
    p.add_argument("--crops", type=Path, default=None,
                   help="--demo: real crops folder <class>/*.jpg pasted into the demo slide "
                        "(default: $WSI_CROPS or ../shared/data/cytology/cell_crops)")
    p.add_argument("--wait", action="store_true",
                   help="when another wsi-run works on a slide (same output folder), wait for it instead of skipping")
    p.add_argument("--skip-space-check", action="store_true",
                   help="start a slide even when the free disk space is below the dry run's estimate of its store")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress output (bars are drawn only on a terminal; logs get a line every 10 s)")
    p.add_argument("--version", action="version", version=f"wsi_pipeline {__version__}")
    add_verbosity(p)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.inputs and not args.demo:
        parser.print_usage(sys.stderr)
        print("wsi-run: error: give slides, a folder, or --demo", file=sys.stderr)
        return 2
    setup_logging(args.verbose - args.quiet)
    return run_guarded(lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    from ..demo import run_demo
    from ..models.bundled import starter_model_path

    if args.demo:
        check_device(args.device, key="--device")
        return run_demo(args.out, device=args.device, progress=not args.no_progress, model=args.model, crops=args.crops)
    cfg = load_config(args.config)  # every key and range checked here, before any work
    _check_options(args)
    model = args.model or starter_model_path()
    if args.model is None:
        log.info("using the bundled starter model (%s): research use only, limits in docs/model_card.md", model.name)
    opts = RunOptions(model=model, device=args.device, scheduler=args.scheduler, workers=args.workers, mpp=args.mpp,
                      force=args.force, keep_store=not args.delete_store, progress=not args.no_progress,
                      wait=args.wait, space_check=not args.skip_space_check)
    slides = find_slides(args.inputs, include_images=args.mpp is not None)
    if not slides:
        raise WsiError(" ".join(args.inputs), f"no slides found (supported: {supported_text()})")
    if args.dry_run:
        return _print_plan(slides, cfg, model, args.mpp)
    outcomes = run_batch(slides, args.out, cfg, opts)
    try:
        csv_path, index = write_summary(args.out, outcomes)
    except OSError as exc:  # e.g. the disk filled up: say so once, keep the per-slide lines below
        from ..diskspace import describe_os_error

        for tmp in args.out.glob("*.tmp"):  # the batch's own half-written summary.csv.tmp
            tmp.unlink(missing_ok=True)
        print(f"error: batch summary not written: {describe_os_error(exc, args.out)}", file=sys.stderr)
        index = None
    failed = [o for o in outcomes if not o.ok]
    for o in outcomes:
        line = f"{Path(o.slide).name}: {o.status}"
        line += f" - {o.category} (suspicion {o.suspicion:.3f}) - {o.report_html}" if o.ok and o.suspicion is not None else ""
        line += f" - {o.reason}" if o.reason else ""
        print(line)
    if len(outcomes) > 1:
        print(f"{len(outcomes) - len(failed)}/{len(outcomes)} slides done; summary: {index}")
    if any(o.disk_full for o in outcomes):
        print("error: the disk is full; the batch stopped starting new slides. Free some space and rerun the same "
              "command to resume.", file=sys.stderr)
    return 1 if failed or index is None else 0


def _check_options(args: argparse.Namespace) -> None:
    """Command-line values, checked before any work; each error names the option (exit status 2)."""
    check_device(args.device, key="--device")
    if args.scheduler is not None:
        check_scheduler(args.scheduler, key="--scheduler")
    check_workers_mpp(args.workers, args.mpp)
    if args.model is not None and not args.model.is_file():
        raise ConfigError(args.model, "--model: no such checkpoint file")
    if args.out.exists() and not args.out.is_dir():
        raise ConfigError(args.out, "--out must be a folder, this is a file")


def _print_plan(slides: list[Path], cfg, model: Path, mpp: float | None) -> int:
    from ..models.checkpoint import read_model_meta  # noqa: PLC0415 - torch only when planning

    rows = plan(slides, cfg, read_model_meta(model), mpp)
    print(f"{'slide':40s} {'size':>13s} {'mpp':>7s} {'patches<=':>10s} {'disk MB':>8s}  status")
    for r in rows:
        print(f"{Path(r['slide']).name[:40]:40s} {r['size']:>13s} {str(r['mpp']):>7s} {r['max_patches']:>10d} "
              f"{r['disk_mb']:>8.1f}  {r['status']}")
    ok = [r for r in rows if r["status"] == "ok"]
    print(f"{len(ok)}/{len(rows)} slides readable; at most {sum(r['max_patches'] for r in ok)} patches, "
          f"{sum(r['disk_mb'] for r in ok):.0f} MB of patch stores")
    return 0 if len(ok) == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
