"""Long-tail benchmark: one detector, one schedule, one dataset, seven classification losses.

Data: real TCT crops composited onto a real TCT field (``configs/longtail_data.yaml``, ``wsi data
composite``'s builder). The training split keeps a natural long tail (rare classes 50-200 boxes);
the test split is written from disjoint crops and a disjoint part of the field, every class equally
often, so each rare class has >= 100 test boxes. Rare classes hold < 10% of the training boxes each.

Model: FCOS on ImageNet EfficientNet-Lite0 at 0.5 um/px (the starter model's network). Losses:
``bce`` (the Grad-Libra paper's baseline), ``focal``, ``eqlv2``, ``efl``, ``efl_official`` (EFL with
its authors' recipe: prior 0.001, SGD with weight decay on every parameter, repeat-factor sampling,
step schedule), ``gradlibra`` (v1) and ``gradlibra_v2``. Seeds are paired: seed s gives every loss
the same initial head, the same batches and the same augmentations.

Output: per loss mAP, rare-class mAP and rare mAP50 (mean ± std over seeds); the rare-class mAP
delta against ``bce`` and against ``focal`` as the mean of the per-seed paired differences with a
bootstrap 95% interval over seeds; whether the loss's per-class statistics left neutral; per-class
AP. The benchmark decides only when its focal baseline is strong (mAP >= 0.3, every rare class AP50
> 0); otherwise it prints **inconclusive** with the reason and no deltas. Writes
``OUT/results.json`` and ``OUT/results.md``; finished runs are reused, so it resumes.

    nice python benchmarks/longtail.py                             # CPU smoke preset: ~10 min on 2 cores
    python benchmarks/longtail.py --preset gpu --time-iters 30     # measure s/iteration, print the plan
    python benchmarks/longtail.py --preset gpu --budget-minutes 60 # size epochs to fit, then run
    python benchmarks/longtail.py --build-data-only                # data sets to carry to a GPU box
    python benchmarks/longtail.py --preset gpu --jobs 7 --budget-minutes 6   # 7 runs at once on one GPU
    python benchmarks/longtail.py --summary-only --out DIR         # the table of the runs finished in DIR

One run of this small network leaves a big GPU mostly idle (its time goes to Python and kernel launches),
so ``--jobs N`` trains N runs at once, each in its own process with its log in ``OUT/runs/``; runs are
started seed by seed, so a stopped benchmark leaves whole seeds. ``--budget-minutes`` then times N
runs at once before it sizes the schedule.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import math
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from wsi_pipeline.benchmarking import PROJECT as ROOT, RESULTS
from wsi_pipeline.benchmarking.longtail import RARE_MAX_SHARE, RECIPES, fmt_delta, mean_std, paired_delta, rare_classes, statistics_moved
from wsi_pipeline.config import load_train_config
from wsi_pipeline.taxonomy import load_taxonomy

PRESETS = {
    # CPU: a smoke test (the path runs, the statistics move, the table prints), not a result
    "cpu": {"config": "configs/longtail.yaml", "train_images": 400, "test_images": 150, "seeds": "0"},
    # GPU: the deciding run; size schedule.epochs with --time-iters / --budget-minutes first
    "gpu": {"config": "configs/longtail_gpu.yaml", "train_images": 2000, "test_images": 600, "seeds": "0,1,2,3,4"},
}
DATA_CONFIG = ROOT / "configs" / "longtail_data.yaml"
# the test split: every class equally often, 1-3 cells per image (>= 100 boxes per class at 600 images)
TEST_SPLIT = {"class_frequencies": dict.fromkeys(["ASC-US", "LSIL", "ASC-H", "HSIL", "SCC", "AGC", "TRICH", "CAND"], 1.0),
              "positives_per_image": [1, 3]}
LOSSES = ["bce", "focal", "eqlv2", "efl", "efl_official", "gradlibra", "gradlibra_v2"]
BASELINES = ("bce", "focal")
# The benchmark decides only when its focal baseline is strong enough (issue 11): focal mAP
# AP@[.5:.95] >= this, and every rare class present in the test set with focal AP50 > 0.
DECISIVE_FOCAL_MAP = 0.3


def build_datasets(out: Path, train_images: int, test_images: int) -> tuple[Path, Path]:
    """The composited train (long tail) and test (balanced) sets, built once and reused."""
    from wsi_pipeline.datasets.composite import build_composite_set, load_composite_config  # noqa: PLC0415

    paths = []
    for split, overrides in (("train", {"images": train_images}), ("test", {"images": test_images, **TEST_SPLIT})):
        path = out / "data" / split
        if not (path / "annotations.json").is_file():
            cfg = load_composite_config(DATA_CONFIG, overrides)
            cfg.crops = str(ROOT / cfg.crops)  # the config's paths are relative to the repository root
            for background in cfg.backgrounds:
                background.path = str(ROOT / background.path)
            logging.info("Building the %s set (%d composited images)", split, overrides["images"])
            build_composite_set(cfg, path, split, progress=False)
        paths.append(path)
    return paths[0], paths[1]


def class_counts(data: Path) -> dict[str, int]:
    coco = json.loads((data / "annotations.json").read_text())
    names = [c["name"] for c in coco["categories"]]
    counts = dict.fromkeys(names, 0)
    for ann in coco["annotations"]:
        counts[names[ann["category_id"] - 1]] += 1
    return counts


def run_overrides(loss: str, base: dict, batch_size: int) -> dict:
    """Config overrides of one benchmark entry: a loss name, or a recipe from :data:`RECIPES` (whose
    SGD learning rate is given per 16 images and scaled linearly to ``batch_size``).

    Example:
        >>> run_overrides("efl_official", {"seed": 1}, batch_size=8)["schedule"]["lr"]
        0.01
    """
    from wsi_pipeline.config import merge  # noqa: PLC0415

    if loss not in RECIPES:
        return merge(base, {"loss": {"name": loss}})
    recipe = merge(RECIPES[loss], {"schedule": {"lr": RECIPES[loss]["schedule"]["lr"] * batch_size / 16}})
    return merge(base, recipe)


def run_path(out: Path, loss: str, seed: int) -> Path:
    return out / "runs" / f"{loss}_seed{seed}"


def child_command(args, train_data: Path, test_data: Path, *extra: str) -> list[str]:
    """This script, run for part of the work in a process of its own (the same preset, config and data)."""
    command = [sys.executable, str(Path(__file__).resolve()), "--preset", args.preset, "--config", str(args.config),
               "--data", str(train_data), "--test-data", str(test_data), "--out", str(args.out),
               "--threads", str(args.threads), "--no-progress", "--no-summary"]
    for flag, value in (("--epochs", args.epochs), ("--workers", args.workers)):
        if value:
            command += [flag, str(value)]
    return command + list(extra)


def run_parallel(args, runs: list[tuple[str, int]], train_data: Path, test_data: Path) -> None:
    """Train ``runs`` ``args.jobs`` at a time, each in its own process, its output in ``OUT/runs/<run>.log``.

    A run that fails is logged and left out; the summary lists the runs not finished.
    """
    def one(run: tuple[str, int]) -> None:
        loss, seed = run
        if (run_path(args.out, loss, seed) / "result.json").is_file():
            return
        log_file = args.out / "runs" / f"{loss}_seed{seed}.log"
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with log_file.open("w") as sink:
            done = subprocess.run(child_command(args, train_data, test_data, "--losses", loss, "--seeds", str(seed)),
                                  stdout=sink, stderr=subprocess.STDOUT, check=False)
        if done.returncode != 0:
            logging.error("%s seed %d failed (exit %d); its log: %s", loss, seed, done.returncode, log_file)
        else:
            logging.info("%s seed %d finished", loss, seed)

    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(one, runs))


def finished_records(out: Path, losses: list[str], seeds: list[int]) -> list[dict]:
    """The results of the runs finished in ``out`` (deltas pair only the seeds both losses finished,
    so a failed run costs its pairs, not the table)."""
    files = [run_path(out, loss, seed) / "result.json" for loss in losses for seed in seeds]
    return [json.loads(f.read_text()) for f in files if f.is_file()]


def run_one(loss: str, seed: int, args, train_data: Path, test_data: Path, overrides: dict, rare: list[str]) -> dict:
    from wsi_pipeline.device import resolve_device  # noqa: PLC0415
    from wsi_pipeline.models.checkpoint import load_checkpoint  # noqa: PLC0415
    from wsi_pipeline.models.data import CocoPatchDataset  # noqa: PLC0415
    from wsi_pipeline.models.evaluation import evaluate_detector  # noqa: PLC0415
    from wsi_pipeline.models.training import check_registry_names, train  # noqa: PLC0415

    run_dir = run_path(args.out, loss, seed)
    result_file = run_dir / "result.json"
    if result_file.is_file():
        return json.loads(result_file.read_text())
    batch_size = load_train_config(args.config, overrides).schedule.batch_size
    over = run_overrides(loss, {**overrides, "train_data": str(train_data), "out": str(run_dir), "seed": seed}, batch_size)
    cfg = load_train_config(args.config, over)
    check_registry_names(cfg)
    started = time.perf_counter()
    trained = train(cfg, resume=(run_dir / "last.pt").is_file(), progress=not args.no_progress)
    seconds = time.perf_counter() - started
    loaded = load_checkpoint(trained.model_path, resolve_device(cfg.device))
    taxonomy = load_taxonomy(cfg.taxonomy or None)
    ev = evaluate_detector(loaded.detector, CocoPatchDataset(test_data), rare, progress=not args.no_progress)
    criterion = loaded.detector.criterion
    stats = criterion.log_statistics() if hasattr(criterion, "log_statistics") else {}
    moved, low = statistics_moved(stats, taxonomy.names, rare)
    record = {"loss": loss, "seed": seed, "train_seconds": seconds, "iterations": loaded.meta["training"]["iterations"],
              "final_loss": trained.final_loss, "statistics": stats, "statistics_moved": moved,
              "lowest_rare_statistic": low, **ev.to_dict()}
    result_file.write_text(json.dumps(record, indent=2))
    logging.info("%s seed %d: mAP %.3f, rare-class mAP %s (%.0f s)", loss, seed, ev.map50_95,
                 "n/a" if ev.rare_map is None else f"{ev.rare_map:.3f}", seconds)
    return record


def summarise(records: list[dict], losses: list[str], names: list[str]) -> dict:
    summary: dict = {}
    for loss in losses:
        rs = [r for r in records if r["loss"] == loss]
        moved = [r.get("statistics_moved") for r in rs]
        summary[loss] = {
            "seeds": [r["seed"] for r in rs],
            "map": mean_std([r["map50_95"] for r in rs]),
            "map50": mean_std([r["map50"] for r in rs]),
            "rare_map": mean_std([r["rare_map"] for r in rs]),
            "rare_map50": mean_std([r["rare_map50"] for r in rs]),
            "per_class_ap": {n: mean_std([r["per_class_ap"].get(n) for r in rs]) for n in names},
            "per_class_ap50": {n: mean_std([r.get("per_class_ap50", {}).get(n) for r in rs]) for n in names},
            "train_seconds": mean_std([r["train_seconds"] for r in rs]),
            "statistics_moved": None if all(m is None for m in moved) else f"{sum(bool(m) for m in moved)}/{len(rs)}",
            "lowest_rare_statistic": mean_std([r.get("lowest_rare_statistic") for r in rs]),
            "delta": {b: paired_delta(records, loss, b) for b in BASELINES if b != loss},
        }
    return summary


def fmt(ms: tuple[float | None, float | None]) -> str:
    m, s = ms
    return "n/a" if m is None else f"{m:.3f} ± {s:.3f}"


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
    reason = inconclusive_reason(summary, [n for n in rare if counts.get(n)])
    stats = {loss: ("-" if s["statistics_moved"] is None else
                    f"{s['statistics_moved']} (lowest {s['lowest_rare_statistic'][0]:.2f})") for loss, s in summary.items()}
    if reason is not None:  # no deltas: they would be read as a result
        lines = [header, "", f"**inconclusive**: {reason}; no deltas are reported.", "",
                 "| loss | mAP | rare-class mAP | rare mAP50 | statistics moved | train s/run |", "|---|---|---|---|---|---|"]
        lines += [f"| {loss} | {fmt(s['map'])} | {fmt(s['rare_map'])} | {fmt(s['rare_map50'])} | {stats[loss]} | "
                  f"{s['train_seconds'][0]:.0f} |" for loss, s in summary.items()]
    else:
        lines = [header, "", "Rare-class mAP deltas: mean of per-seed paired differences [bootstrap 95% interval].", "",
                 "| loss | mAP | rare-class mAP | Δ vs bce | Δ vs focal | rare mAP50 | statistics moved | train s/run |",
                 "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {loss} | {fmt(s['map'])} | {fmt(s['rare_map'])} | {fmt_delta(s['delta'].get('bce'))} | "
                  f"{fmt_delta(s['delta'].get('focal'))} | {fmt(s['rare_map50'])} | {stats[loss]} | "
                  f"{s['train_seconds'][0]:.0f} |" for loss, s in summary.items()]
    present = [n for n in names if counts.get(n)]
    lines += ["", "Per-class AP@[.5:.95], mean ± std over seeds (test boxes in brackets; * rare):", "",
              "| class | " + " | ".join(summary) + " |", "|---|" + "---|" * len(summary)]
    for n in present:
        star = "*" if n in rare else ""
        lines.append(f"| {n}{star} ({counts[n]}) | " + " | ".join(fmt(s["per_class_ap"][n]) for s in summary.values()) + " |")
    return "\n".join(lines) + "\n"


def time_iterations(args, train_data: Path, test_data: Path, overrides: dict, iters: int, slot: int = 0) -> tuple[float, float]:
    """(seconds per training iteration, seconds a run spends outside its iterations) of the preset's config:
    focal, one 3-iteration run for the start-up, one of ``iters`` more whose extra time gives the
    iterations, and the evaluation of that model on the test set."""
    from wsi_pipeline.device import resolve_device  # noqa: PLC0415
    from wsi_pipeline.models.checkpoint import load_checkpoint  # noqa: PLC0415
    from wsi_pipeline.models.data import CocoPatchDataset  # noqa: PLC0415
    from wsi_pipeline.models.evaluation import evaluate_detector  # noqa: PLC0415
    from wsi_pipeline.models.training import train  # noqa: PLC0415

    run_dir = args.out / f"timing{slot}"
    for old in ("model.pt", "last.pt", "metrics.jsonl"):
        (run_dir / old).unlink(missing_ok=True)
    short = {**overrides, "train_data": str(train_data), "out": str(run_dir), "log_loss_stats_every": 0,
             "schedule": {**overrides.get("schedule", {}), "epochs": 1, "max_iters_per_epoch": 3}}
    cfg = load_train_config(args.config, short)
    warm = time.perf_counter()
    train(cfg, progress=False)
    warm = time.perf_counter() - warm
    for old in ("model.pt", "last.pt", "metrics.jsonl"):
        (run_dir / old).unlink(missing_ok=True)
    cfg = load_train_config(args.config, {**short, "schedule": {**short["schedule"], "max_iters_per_epoch": iters + 3}})
    started = time.perf_counter()
    trained = train(cfg, progress=False)
    per_iteration = (time.perf_counter() - started - warm) / iters
    started = time.perf_counter()
    loaded = load_checkpoint(trained.model_path, resolve_device(cfg.device))
    evaluate_detector(loaded.detector, CocoPatchDataset(test_data), [], progress=False)
    outside = warm + time.perf_counter() - started
    (run_dir / "timing.json").write_text(json.dumps({"seconds_per_iteration": per_iteration, "outside_seconds": outside}))
    return per_iteration, outside


def time_parallel(args, train_data: Path, test_data: Path, iters: int) -> tuple[float, float]:
    """:func:`time_iterations` in ``args.jobs`` processes at once (the load the runs will share); the slowest."""
    def one(slot: int) -> tuple[float, float]:
        command = child_command(args, train_data, test_data, "--time-iters", str(iters), "--timing-slot", str(slot))
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"timing process {slot} failed: {done.stderr.strip().splitlines()[-1:]}")
        timing = json.loads((args.out / f"timing{slot}" / "timing.json").read_text())
        return timing["seconds_per_iteration"], timing["outside_seconds"]

    with ThreadPoolExecutor(args.jobs) as pool:
        timings = list(pool.map(one, range(args.jobs)))
    return max(t[0] for t in timings), max(t[1] for t in timings)


def plan(seconds_per_iter: float, cfg, n_train: int, runs: int, budget_minutes: float | None,
         jobs: int = 1, outside: float = 0.0) -> int:
    """Epochs per run: the config's, or the most that fit ``budget_minutes`` for all runs trained ``jobs``
    at a time (each run also spends ``outside`` seconds on its start and its evaluation; 10% spare).

    Example:
        >>> from types import SimpleNamespace
        >>> cfg = SimpleNamespace(schedule=SimpleNamespace(batch_size=32, max_iters_per_epoch=0, epochs=24))
        >>> plan(0.1, cfg, n_train=2000, runs=35, budget_minutes=6, jobs=7, outside=10.0)  # doctest: +ELLIPSIS
        0.100 s/iteration ...; 63 iterations per epoch; 35 runs, 7 at a time, x 8 epochs = ...
        8
    """
    s = cfg.schedule
    per_epoch = math.ceil(n_train / s.batch_size)
    if s.max_iters_per_epoch > 0:
        per_epoch = min(per_epoch, s.max_iters_per_epoch)
    waves = math.ceil(runs / jobs)
    epochs = s.epochs
    if budget_minutes:
        training_seconds = budget_minutes * 60 * 0.9 - waves * outside
        epochs = max(1, int(training_seconds / (waves * per_epoch * seconds_per_iter)))
    total = waves * (epochs * per_epoch * seconds_per_iter + outside) / 0.9
    print(f"{seconds_per_iter:.3f} s/iteration ({1 / seconds_per_iter:.1f} it/s per run), {outside:.0f} s start-up and evaluation; "
          f"{per_epoch} iterations per epoch; {runs} runs, {jobs} at a time, x {epochs} epochs = "
          f"{runs * epochs * per_epoch} iterations: ~{total / 60:.1f} min with evaluation")
    return epochs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    p.add_argument("--config", type=Path, help="training config (default: the preset's)")
    p.add_argument("--losses", default=",".join(LOSSES), help="comma-separated loss names or recipes")
    p.add_argument("--seeds", default=None, help="comma-separated training seeds (default: the preset's)")
    p.add_argument("--data", type=Path, help="prebuilt training set (default: composited into OUT/data/train)")
    p.add_argument("--test-data", type=Path, help="prebuilt test set (default: OUT/data/test)")
    p.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/longtail_<preset>")
    p.add_argument("--epochs", type=int, help="override schedule.epochs")
    p.add_argument("--workers", type=int, help="override schedule.workers (data-loading processes per run)")
    p.add_argument("--jobs", type=int, default=1, help="runs trained at once, each in its own process (GPU)")
    p.add_argument("--time-iters", type=int, default=0, help="time this many iterations, print the plan and stop")
    p.add_argument("--budget-minutes", type=float, default=None, help="size epochs so that all runs fit (times first)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads per run (0: all, shared out among --jobs)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--build-data-only", action="store_true", help="build OUT/data/{train,test} and stop (to carry to a GPU box)")
    p.add_argument("--summary-only", action="store_true", help="train nothing: the table of the runs finished in OUT")
    # set by --jobs for its worker processes: train (or time) and leave the summary to the parent
    p.add_argument("--no-summary", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--timing-slot", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if args.jobs < 1:
        p.error("--jobs must be >= 1")
    preset = PRESETS[args.preset]
    args.config = Path(args.config or ROOT / preset["config"]).resolve()
    args.out = (args.out or RESULTS / f"longtail_{args.preset}").resolve()
    if args.jobs > 1 and args.threads == 0:
        args.threads = max(1, (os.cpu_count() or 1) // args.jobs)
    overrides: dict = {"num_threads": args.threads}
    schedule = {k: v for k, v in (("epochs", args.epochs), ("workers", args.workers)) if v}
    if schedule:
        overrides["schedule"] = schedule
    seeds = [int(s) for s in (args.seeds or preset["seeds"]).split(",")]
    if importlib.util.find_spec("albumentations") is None:
        logging.warning("albumentations is not installed: training without augmentation")
        overrides["augment"] = {"enabled": False}
    losses = [x for x in args.losses.split(",") if x]
    unknown = [x for x in losses if x not in RECIPES and x not in LOSSES]
    if unknown:
        p.error(f"unknown loss or recipe {', '.join(unknown)}; known: {', '.join(LOSSES)}")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.data and args.test_data:
        train_data, test_data = args.data.resolve(), args.test_data.resolve()
    else:
        train_data, test_data = build_datasets(args.out, preset["train_images"], preset["test_images"])
    if args.build_data_only:
        print(f"datasets: {train_data} {test_data}")
        return 0
    train_counts, test_counts = class_counts(train_data), class_counts(test_data)
    started = time.perf_counter()
    if not args.summary_only and (args.time_iters or args.budget_minutes):
        iters = args.time_iters or 20
        if args.no_summary:  # a timing process of --jobs
            time_iterations(args, train_data, test_data, overrides, iters, args.timing_slot)
            return 0
        per_iter, outside = (time_parallel(args, train_data, test_data, iters) if args.jobs > 1
                             else time_iterations(args, train_data, test_data, overrides, iters))
        cfg = load_train_config(args.config, overrides)
        n_train = len(json.loads((train_data / "annotations.json").read_text())["images"])
        budget = args.budget_minutes and args.budget_minutes - (time.perf_counter() - started) / 60  # timing included
        epochs = plan(per_iter, cfg, n_train, len(losses) * len(seeds), budget, args.jobs, outside)
        if not args.budget_minutes:
            return 0
        args.epochs = epochs
        overrides["schedule"] = {**overrides.get("schedule", {}), "epochs": epochs}
    taxonomy = load_taxonomy()
    rare = rare_classes(train_counts)
    logging.info("Training boxes per class: %s", train_counts)
    logging.info("Test boxes per class: %s; rare (< %.0f%% of the training boxes): %s", test_counts, 100 * RARE_MAX_SHARE, rare)
    thin = [n for n in rare if test_counts.get(n, 0) < 100]
    if thin and args.preset == "gpu":
        logging.warning("rare classes with < 100 test boxes: %s", ", ".join(thin))

    runs = [(loss, seed) for seed in seeds for loss in losses]  # seed by seed: a stopped benchmark leaves whole seeds
    if not args.summary_only and args.jobs > 1:
        run_parallel(args, runs, train_data, test_data)
    elif not args.summary_only:
        for loss, seed in runs:
            run_one(loss, seed, args, train_data, test_data, overrides, rare)
    if args.no_summary:
        return 0
    records = finished_records(args.out, losses, seeds)
    done = {(r["loss"], r["seed"]) for r in records}
    missing = [f"{loss} seed {seed}" for loss, seed in runs if (loss, seed) not in done]
    if missing:
        logging.warning("not finished, left out: %s", ", ".join(missing))
    finished = [loss for loss in losses if any((loss, seed) in done for seed in seeds)]
    if not finished:
        logging.error("%s: no run finished; nothing to summarise", args.out)
        return 1
    complete = [seed for seed in seeds if all((loss, seed) in done for loss in losses)]
    summary = summarise(records, finished, taxonomy.names)
    cfg = load_train_config(args.config, overrides)
    wall = "" if args.summary_only else f", {time.perf_counter() - started:.0f} s wall, {args.jobs} at a time"
    header = (f"Long-tail benchmark, preset {args.preset}: {cfg.model.detector}/{cfg.model.backbone} "
              f"({cfg.model.backbone_weights or 'from scratch'}), {cfg.patch_size} px at {cfg.target_mpp} um/px, "
              f"{records[0].get('iterations', '?')} iterations per run, seeds {seeds}{wall}. Training boxes: "
              + ", ".join(f"{n} {c}" for n, c in train_counts.items() if c) + f". Rare: {', '.join(rare)}."
              + (f" Not finished (left out): {', '.join(missing)}." if missing else ""))
    table = markdown(summary, taxonomy.names, test_counts, rare, header)
    reason = inconclusive_reason(summary, [n for n in rare if test_counts.get(n)])
    (args.out / "results.json").write_text(json.dumps(
        {"preset": args.preset, "seeds": seeds, "complete_seeds": complete, "missing": missing, "inconclusive": reason, "rare": rare, "train_counts": train_counts,
         "test_counts": test_counts, "summary": summary, "runs": records}, indent=2))
    (args.out / "results.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
