"""Long-tail benchmark: the same detector and schedule with focal, EQL v2, EFL and Grad-Libra.

Trains every loss with several seeds on one long-tailed synthetic dataset (``wsi_pipeline.synth``,
composited real crops from ../shared/data/cytology/cell_crops when present), evaluates each run on
a held-out synthetic test set and prints mAP, rare-class mAP and per-class AP as mean +- std over
seeds, with each loss's ratio to the focal-loss baseline measured in the same run. Writes
``OUT/results.json`` and ``OUT/results.md``. Finished runs are reused, so an interrupted benchmark
continues where it stopped.

Runs on a GPU box with only torch, torchvision, numpy, pyyaml, tqdm and pycocotools or
faster-coco-eval: pass ``--data``/``--test-data`` built elsewhere (the synthetic generator and
albumentations are then not imported; without albumentations augmentation is switched off).

    nice python benchmarks/longtail.py --preset cpu                      # ~45 min on 2 cores
    python benchmarks/longtail.py --preset gpu --data D/train --test-data D/test
    nice python benchmarks/longtail.py --smoke                           # minutes: 1 seed, short
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from wsi_pipeline.config import load_train_config  # noqa: E402
from wsi_pipeline.taxonomy import load_taxonomy  # noqa: E402

PRESETS = {
    # dataset: synthetic slides for training / testing, their size in px at the synthetic slide mpp
    "cpu": {"config": "configs/longtail.yaml", "train_slides": 4, "test_slides": 3, "size_px": 6000},
    "gpu": {"config": "configs/longtail_gpu.yaml", "train_slides": 4, "test_slides": 3, "size_px": 6000},
}
LOSSES = ["focal", "eqlv2", "efl", "gradlibra"]
# The benchmark decides only when its focal baseline is strong enough (issue 11): focal mAP
# AP@[.5:.95] >= this, and every rare class present in the test set with focal AP50 > 0.
DECISIVE_FOCAL_MAP = 0.3
CROPS = ROOT.parent / "shared" / "data" / "cytology" / "cell_crops"


def build_datasets(out: Path, preset: dict, cfg, seed_base: int) -> tuple[Path, Path]:
    """Synthetic train and test sets (different slide seeds), built once and reused."""
    from wsi_pipeline.synth import make_training_set  # noqa: PLC0415 (only when building data)

    crops = CROPS if CROPS.is_dir() else None
    paths = []
    # the training set keeps the natural long tail (configs/synth.yaml); the test set is enriched with
    # rare cells (configs/synth_demo.yaml minimum counts) so that their AP rests on more than 1-2 boxes
    sets = (("train", preset["train_slides"], seed_base, None),
            ("test", preset["test_slides"], seed_base + 100, ROOT / "configs" / "synth_demo.yaml"))
    for name, n, seed, synth_config in sets:
        path = out / "data" / name
        if not (path / "annotations.json").is_file():
            logging.info("Building the %s set (%d synthetic slides%s)", name, n, ", real crops" if crops else "")
            make_training_set(path, n_slides=n, size_px=preset["size_px"], crops_dir=crops, config=synth_config,
                              target_mpp=cfg.target_mpp, patch_size=cfg.patch_size, seed=seed)
        paths.append(path)
    return paths[0], paths[1]


def class_counts(data: Path) -> dict[str, int]:
    coco = json.loads((data / "annotations.json").read_text())
    names = [c["name"] for c in coco["categories"]]
    counts = dict.fromkeys(names, 0)
    for ann in coco["annotations"]:
        counts[names[ann["category_id"] - 1]] += 1
    return counts


def run_one(loss: str, seed: int, args, train_data: Path, test_data: Path, overrides: dict) -> dict:
    from wsi_pipeline.models.checkpoint import load_checkpoint  # noqa: PLC0415
    from wsi_pipeline.models.data import CocoPatchDataset  # noqa: PLC0415
    from wsi_pipeline.models.evaluation import evaluate_detector  # noqa: PLC0415
    from wsi_pipeline.device import resolve_device  # noqa: PLC0415
    from wsi_pipeline.models.training import train  # noqa: PLC0415

    run_dir = args.out / "runs" / f"{loss}_seed{seed}"
    result_file = run_dir / "result.json"
    if result_file.is_file():
        return json.loads(result_file.read_text())
    over = {**overrides, "train_data": str(train_data), "out": str(run_dir), "seed": seed, "loss": {"name": loss}}
    cfg = load_train_config(ROOT / PRESETS[args.preset]["config"], over)
    started = time.perf_counter()
    trained = train(cfg, resume=(run_dir / "last.pt").is_file(), progress=not args.no_progress)
    seconds = time.perf_counter() - started
    loaded = load_checkpoint(trained.model_path, resolve_device(cfg.device))
    taxonomy = load_taxonomy(cfg.taxonomy or None)
    ev = evaluate_detector(loaded.detector, CocoPatchDataset(test_data), taxonomy.abnormal_names(),
                           progress=not args.no_progress)
    pos_neg = loaded.meta["loss"]["state"].get("pos_neg")
    record = {"loss": loss, "seed": seed, "train_seconds": seconds, "final_loss": trained.final_loss,
              "pos_neg": pos_neg, **ev.to_dict()}
    result_file.write_text(json.dumps(record, indent=2))
    logging.info("%s seed %d: mAP %.3f, rare-class mAP %s (%.0f s)", loss, seed, ev.map50_95,
                 "n/a" if ev.rare_map is None else f"{ev.rare_map:.3f}", seconds)
    return record


def mean_std(values: list[float | None]) -> tuple[float | None, float | None]:
    vals = [v for v in values if v is not None]
    if not vals:
        return None, None
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def summarise(records: list[dict], losses: list[str], names: list[str]) -> dict:
    summary: dict = {}
    for loss in losses:
        rs = [r for r in records if r["loss"] == loss]
        summary[loss] = {
            "seeds": [r["seed"] for r in rs],
            "map": mean_std([r["map50_95"] for r in rs]),
            "map50": mean_std([r["map50"] for r in rs]),
            "rare_map": mean_std([r["rare_map"] for r in rs]),
            "rare_map50": mean_std([r["rare_map50"] for r in rs]),
            "per_class_ap": {n: mean_std([r["per_class_ap"].get(n) for r in rs]) for n in names},
            "per_class_ap50": {n: mean_std([r.get("per_class_ap50", {}).get(n) for r in rs]) for n in names},
            "train_seconds": mean_std([r["train_seconds"] for r in rs]),
        }
    return summary


def fmt(ms: tuple[float | None, float | None]) -> str:
    m, s = ms
    return "n/a" if m is None else f"{m:.3f} ± {s:.3f}"


def ratio(value: float | None, base: float | None) -> str:
    if value is None or base is None or base < 1e-3:  # a ratio to ~0 means nothing
        return "n/a"
    return f"{value / base:.2f}x"


def inconclusive_reason(summary: dict, rare_present: list[str]) -> str | None:
    """None when the run can decide between losses; otherwise why it cannot.

    Example:
        >>> inconclusive_reason({"focal": {"map": (0.1, 0.0)}}, [])
        'focal mAP 0.100 < 0.3'
    """
    focal = summary.get("focal")
    if focal is None:
        return "no focal baseline in this run"
    focal_map = focal["map"][0]
    if focal_map is None or focal_map < DECISIVE_FOCAL_MAP:
        return f"focal mAP {'n/a' if focal_map is None else f'{focal_map:.3f}'} < {DECISIVE_FOCAL_MAP}"
    zero = [n for n in rare_present if not (focal["per_class_ap50"].get(n, (None,))[0] or 0.0) > 0]
    if zero:
        return f"focal AP50 is 0 for rare classes {', '.join(zero)}"
    return None


def markdown(summary: dict, names: list[str], counts: dict[str, int], rare: list[str], header: str) -> str:
    base = summary.get("focal", {})
    reason = inconclusive_reason(summary, [n for n in rare if counts.get(n)])
    if reason is not None:  # no ratios: they would be read as a result
        lines = [header, "", f"**inconclusive**: {reason}; no ratios are reported.", "",
                 "| loss | mAP | rare-class mAP | rare mAP50 | train s/run |", "|---|---|---|---|---|"]
        lines += [f"| {loss} | {fmt(s['map'])} | {fmt(s['rare_map'])} | {fmt(s['rare_map50'])} | "
                  f"{s['train_seconds'][0]:.0f} |" for loss, s in summary.items()]
    else:
        lines = [header, "", "| loss | mAP | vs focal | rare-class mAP | vs focal | rare mAP50 | train s/run |",
                 "|---|---|---|---|---|---|---|"]
    for loss, s in summary.items() if reason is None else ():
        lines.append(
            f"| {loss} | {fmt(s['map'])} | {ratio(s['map'][0], base.get('map', (None,))[0])} | {fmt(s['rare_map'])} | "
            f"{ratio(s['rare_map'][0], base.get('rare_map', (None,))[0])} | {fmt(s['rare_map50'])} | "
            f"{s['train_seconds'][0]:.0f} |"
        )
    present = [n for n in names if counts.get(n)]
    lines += ["", "Per-class AP@[.5:.95], mean ± std over seeds (test boxes in brackets; * rare/abnormal):", "",
              "| class | " + " | ".join(summary) + " |", "|---|" + "---|" * len(summary)]
    for n in present:
        star = "*" if n in rare else ""
        lines.append(f"| {n}{star} ({counts[n]}) | " + " | ".join(fmt(s["per_class_ap"][n]) for s in summary.values()) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    p.add_argument("--losses", default=",".join(LOSSES), help="comma-separated loss names")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated training seeds")
    p.add_argument("--data", type=Path, help="prebuilt training set (default: synthesised into OUT/data/train)")
    p.add_argument("--test-data", type=Path, help="prebuilt test set (default: OUT/data/test)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "longtail")
    p.add_argument("--smoke", action="store_true", help="one seed, 2 short epochs, small data: checks the path in minutes")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: all)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--build-data-only", action="store_true", help="build OUT/data/{train,test} and stop (to carry to a GPU box)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    preset = dict(PRESETS[args.preset])
    overrides: dict = {"num_threads": args.threads}
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.smoke:
        args.out = args.out.with_name(args.out.name + "_smoke")
        preset.update(train_slides=2, test_slides=1, size_px=4096)
        overrides["schedule"] = {"epochs": 2, "max_iters_per_epoch": 15}
        seeds = seeds[:1]
    if importlib.util.find_spec("albumentations") is None:
        logging.warning("albumentations is not installed: training without augmentation")
        overrides["augment"] = {"enabled": False}
    losses = [x for x in args.losses.split(",") if x]
    cfg = load_train_config(ROOT / preset["config"], overrides)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.data and args.test_data:
        train_data, test_data = args.data, args.test_data
    else:
        train_data, test_data = build_datasets(args.out, preset, cfg, seed_base=1000)
    if args.build_data_only:
        print(f"datasets: {train_data} {test_data}")
        return 0
    taxonomy = load_taxonomy(cfg.taxonomy or None)
    train_counts, test_counts = class_counts(train_data), class_counts(test_data)
    logging.info("Training boxes per class: %s", train_counts)
    logging.info("Test boxes per class: %s", test_counts)

    started = time.perf_counter()
    records = [run_one(loss, seed, args, train_data, test_data, overrides) for loss in losses for seed in seeds]
    summary = summarise(records, losses, taxonomy.names)
    header = (f"Long-tail benchmark, preset {args.preset}{' (smoke)' if args.smoke else ''}: "
              f"{cfg.model.detector}/{cfg.model.backbone}, {cfg.patch_size} px at {cfg.target_mpp} um/px, "
              f"seeds {seeds}, {time.perf_counter() - started:.0f} s wall")
    table = markdown(summary, taxonomy.names, test_counts, taxonomy.abnormal_names(), header)
    reason = inconclusive_reason(summary, [n for n in taxonomy.abnormal_names() if test_counts.get(n)])
    (args.out / "results.json").write_text(json.dumps(
        {"preset": args.preset, "smoke": args.smoke, "seeds": seeds, "inconclusive": reason,
         "train_counts": train_counts,
         "test_counts": test_counts, "summary": summary, "runs": records}, indent=2))
    (args.out / "results.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
