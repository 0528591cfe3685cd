"""The demo: a synthetic TCT slide with planted abnormal cells, the demo model, the whole pipeline.

The demo model is trained by ``wsi train`` (``configs/train_demo.yaml``) on synthetic slides the first
time it is needed (a few minutes on 2 CPU cores) and cached under ``$WSI_PIPELINE_CACHE``
(default ``~/.cache/wsi_pipeline``). It has only seen synthetic cells: it shows the pipeline
working, it is not a model for real slides.

Example:
    >>> from wsi_pipeline.demo import cache_dir
    >>> cache_dir().name
    'wsi_pipeline'
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import load_config, load_train_config
from .errors import WsiError
from .pipeline import RunOptions, run_slide
from .progress import progress_enabled
from .taxonomy import CONFIG_DIR, load_taxonomy

log = logging.getLogger(__name__)

DEMO_TRAIN_CONFIG = CONFIG_DIR / "train_demo.yaml"
DEMO_SYNTH_CONFIG = CONFIG_DIR / "synth_demo.yaml"
DEMO_SLIDE_SIZE = 10_000  # px at 0.25 um/px: a 2.5 x 2.5 mm piece of a preparation
DEMO_SLIDE_SEED = 2026
TRAIN_SLIDES, TRAIN_SLIDE_SIZE, TRAIN_SEED = 4, 6000, 100  # never the demo slide's seed
HIGH_GRADE = ("ASC-H", "HSIL", "SCC")


def cache_dir() -> Path:
    return Path(os.environ.get("WSI_PIPELINE_CACHE", Path.home() / ".cache" / "wsi_pipeline"))


def default_model_path(build_if_missing: bool = True, progress: bool = True) -> Path:
    """The demo model's checkpoint, trained on first use when ``build_if_missing``."""
    path = cache_dir() / "demo_model.pt"
    if not path.is_file():
        if not build_if_missing:
            raise WsiError(path, "demo model not built yet; run `wsi-run --demo` or pass --model")
        build_demo_model(path, progress=progress)
    return path


def build_demo_model(path: Path, progress: bool = True) -> Path:
    """Generate a synthetic training set and train the demo detector into ``path``."""
    from .models.training import train
    from .synth import make_training_set

    cfg = load_train_config(DEMO_TRAIN_CONFIG)
    work = cache_dir() / "demo_training"
    data_dir = work / "dataset"
    if not (data_dir / "annotations.json").is_file():
        log.info("building the demo training set (%d synthetic slides)", TRAIN_SLIDES)
        make_training_set(data_dir, n_slides=TRAIN_SLIDES, size_px=TRAIN_SLIDE_SIZE, target_mpp=cfg.target_mpp,
                          patch_size=cfg.patch_size, seed=TRAIN_SEED, config=DEMO_SYNTH_CONFIG, progress=progress)
    cfg = load_train_config(DEMO_TRAIN_CONFIG, overrides={"train_data": str(data_dir), "out": str(work / "run")})
    log.info("training the demo model (%s + %s, %d epochs); a few minutes on CPU",
             cfg.model.detector, cfg.loss.name, cfg.schedule.epochs)
    run_dir = work / "run"
    result = train(cfg, out_dir=run_dir, resume=(run_dir / "last.pt").is_file(),
                   progress=progress and progress_enabled())  # tqdm bars only on a terminal
    tmp = path.with_suffix(".pt.tmp")
    shutil.copyfile(result.model_path, tmp)
    os.replace(tmp, path)
    log.info("demo model cached at %s", path)
    return path


@dataclass
class DemoRecall:
    planted: int
    found: int

    @property
    def recall(self) -> float:
        return self.found / self.planted if self.planted else float("nan")


def high_grade_recall(truth_geojson: Path, cells_geojson: Path) -> DemoRecall:
    """Planted ASC-H/HSIL/SCC cells whose centre lies in a reported cell of an abnormal class."""
    taxonomy = load_taxonomy()
    abnormal = set(taxonomy.abnormal_names())
    planted = [_box(f) for f in json.loads(truth_geojson.read_text())["features"] if _cls(f) in HIGH_GRADE]
    found_boxes = [_box(f) for f in json.loads(cells_geojson.read_text())["features"] if _cls(f) in abnormal]
    if not planted:
        return DemoRecall(0, 0)
    det = np.array(found_boxes, dtype=float).reshape(-1, 4)
    found = 0
    for x0, y0, x1, y1 in planted:
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        found += bool(((det[:, 0] <= cx) & (cx <= det[:, 2]) & (det[:, 1] <= cy) & (cy <= det[:, 3])).any())
    return DemoRecall(len(planted), found)


def _cls(feature: dict) -> str:
    return feature["properties"]["classification"]["name"]


def _box(feature: dict) -> tuple[float, float, float, float]:
    pts = np.array(feature["geometry"]["coordinates"][0], dtype=float)
    return pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max()


def run_demo(out: Path, device: str = "auto", progress: bool = True) -> int:
    """Synthetic slide -> demo model -> ``wsi-run``; prints the report path and the high-grade recall."""
    from .synth import generate_slide

    started = time.perf_counter()
    out = Path(out)
    model = default_model_path(progress=progress)
    slide_dir = out / "slides"
    slide = generate_slide(slide_dir, DEMO_SLIDE_SIZE, seed=DEMO_SLIDE_SEED, config=DEMO_SYNTH_CONFIG,
                           name="demo_tct", progress=progress)
    log.info("demo slide: %s (planted: %s)", slide.slide_path,
             ", ".join(f"{k} {v}" for k, v in slide.counts.items() if v))
    opts = RunOptions(model=model, device=device, progress=progress)
    outcome = run_slide(slide.slide_path, out, load_config(), opts)
    if not outcome.ok:
        raise WsiError(slide.slide_path, f"demo run failed: {outcome.reason}")
    recall = high_grade_recall(slide.geojson_path, Path(outcome.out_dir) / "cells.geojson")
    print(f"demo slide: {slide.slide_path}")
    print(f"category: {outcome.category} (truth: most severe planted class {slide.most_severe}); "
          f"suspicion {outcome.suspicion:.3f}")
    print(f"planted high-grade cells (ASC-H/HSIL/SCC) found: {recall.found}/{recall.planted} "
          f"(recall {recall.recall:.2f})")
    print(f"report: {outcome.report_html}")
    print(f"demo finished in {time.perf_counter() - started:.0f} s. Demo model trained on synthetic cells only: "
          "not for clinical use.")
    return 0
