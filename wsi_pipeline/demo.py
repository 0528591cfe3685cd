"""The demo: a synthetic TCT slide with planted real abnormal cells, the bundled starter model, the whole pipeline.

The slide's normal and inflammatory cells are drawn; its abnormal cells are real crops pasted in
(composited mode), taken only from the crops held out of the starter model's training set, so the
printed recall is measured on cells the model never saw. Without the crops folder (a checkout outside
this workplace: pass ``--crops`` or set ``WSI_CROPS``) the abnormal cells are drawn too, and the recall
says little about real cells. Nothing is trained at run time.

Example:
    >>> default_crops_dir().name
    'cell_crops'
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import PipelineConfig, load_config
from .datasets.annotations import load_annotations
from .errors import WsiError
from .models.bundled import starter_model_path
from .aggregate.cell_hits import HIGH_GRADE_CLASSES, nucleus_hits, truth_from_annotations
from .pipeline import RunOptions, run_slide
from .taxonomy import CONFIG_DIR, load_taxonomy

log = logging.getLogger(__name__)

DEMO_SYNTH_CONFIG = CONFIG_DIR / "synth_demo.yaml"
DEMO_SLIDE_SIZE = 10_000  # px at 0.25 um/px: a 2.5 x 2.5 mm piece of a preparation
DEMO_SLIDE_SEED = 2026


def default_crops_dir() -> Path:
    """``$WSI_CROPS``, else ``../shared/data/cytology/cell_crops`` beside the project checkout."""
    env = os.environ.get("WSI_CROPS")
    return Path(env) if env else CONFIG_DIR.parent.parent / "shared" / "data" / "cytology" / "cell_crops"


@dataclass
class DemoRecall:
    planted: int
    found: int

    @property
    def recall(self) -> float:
        return self.found / self.planted if self.planted else float("nan")


def high_grade_recall(truth_geojson: Path, cells_geojson: Path) -> DemoRecall:
    """Planted ASC-H/HSIL/SCC cells whose centre lies in a reported cell of an abnormal class (the
    nucleus-hit rule of :mod:`wsi_pipeline.aggregate.cell_hits`; the exported cells are already counted)."""
    taxonomy = load_taxonomy()
    planted = [c for c in truth_from_annotations(load_annotations(truth_geojson, taxonomy, {}))
               if c.class_name in HIGH_GRADE_CLASSES]
    cells = load_annotations(cells_geojson, taxonomy, {})
    boxes = np.array([c.box for c in cells], np.float32).reshape(-1, 4)
    labels = np.array([taxonomy.index(c.class_name) for c in cells], np.int64)
    hits = nucleus_hits(boxes, labels, np.ones(len(cells), np.float32), [0.0] * len(taxonomy.names), taxonomy, planted)
    return DemoRecall(len(planted), hits.abnormal_found)


@dataclass
class DemoOutcome:
    slide_path: Path
    crops_used: bool
    category: str
    truth: str
    suspicion: float
    recall: DemoRecall
    report_html: Path


def demo_slide_run(out: Path, device: str = "auto", progress: bool = True, model: Path | None = None,
                   crops: Path | None = None, config: PipelineConfig | None = None) -> DemoOutcome:
    """Synthetic slide with held-out real crops -> a model (default: the starter) -> ``wsi-run`` (with ``config``,
    default: the defaults); the slide call and the planted high-grade cells found."""
    from .synth import generate_slide

    out = Path(out)
    model = model or starter_model_path()
    crops = crops or default_crops_dir()
    if not crops.is_dir():
        log.warning("crops folder %s not found: abnormal cells will be drawn, not real (pass --crops)", crops)
        crops = None
    slide_dir = out / "slides"
    slide = generate_slide(slide_dir, DEMO_SLIDE_SIZE, seed=DEMO_SLIDE_SEED, config=DEMO_SYNTH_CONFIG,
                           crops_dir=crops, crops_split="test" if crops else None, name="demo_tct", progress=progress)
    log.info("demo slide: %s (planted: %s)", slide.slide_path,
             ", ".join(f"{k} {v}" for k, v in slide.counts.items() if v))
    opts = RunOptions(model=model, device=device, progress=progress)
    outcome = run_slide(slide.slide_path, out, config or load_config(), opts)
    if not outcome.ok:
        raise WsiError(slide.slide_path, f"demo run failed: {outcome.reason}")
    recall = high_grade_recall(slide.geojson_path, Path(outcome.out_dir) / "cells.geojson")
    return DemoOutcome(Path(slide.slide_path), crops is not None, outcome.category, slide.most_severe,
                       outcome.suspicion, recall, Path(outcome.report_html))


def run_demo(out: Path, device: str = "auto", progress: bool = True, model: Path | None = None,
             crops: Path | None = None) -> int:
    """:func:`demo_slide_run`, printed: the report path and the planted high-grade recall."""
    started = time.perf_counter()
    d = demo_slide_run(out, device, progress, model, crops)
    kind = "real held-out crops" if d.crops_used else "drawn cells (no crops folder)"
    print(f"demo slide: {d.slide_path} (abnormal cells: {kind})")
    print(f"model: {model or starter_model_path()}")
    print(f"category: {d.category} (truth: most severe planted class {d.truth}); suspicion {d.suspicion:.3f}")
    print(f"planted high-grade cells (ASC-H/HSIL/SCC) found: {d.recall.found}/{d.recall.planted} "
          f"(recall {d.recall.recall:.2f})")
    print(f"report: {d.report_html}")
    print(f"demo finished in {time.perf_counter() - started:.0f} s. Research use only: not for clinical use.")
    return 0
