"""Write a synthetic (or composited) TCT slide and its ground truth."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from ..progress import progress_bar

from ..errors import ConfigError
from ..io.tiffwriter import write_pyramidal_tiff
from ..taxonomy import Taxonomy, load_taxonomy
from .composite import CropBank, crop_od
from .config import SynthConfig, load_synth_config
from .layout import Cell, plan_slide
from .render import SlideRenderer
from .truth import Annotation, _write_json, most_severe, write_coco, write_geojson

log = logging.getLogger(__name__)
MIN_SIZE, MAX_SIZE = 1024, 200_000


@dataclass
class SynthSlide:
    slide_path: Path
    geojson_path: Path
    coco_path: Path
    truth_path: Path
    cells: list[Cell]
    counts: dict[str, int]
    most_severe: str
    seconds: float


def generate_slide(
    out_dir: str | Path,
    size_px: int,
    seed: int = 0,
    mpp: float = 0.25,
    config: SynthConfig | str | Path | None = None,
    crops_dir: str | Path | None = None,
    crops_split: str | None = None,
    name: str | None = None,
    taxonomy: Taxonomy | None = None,
    progress: bool = True,
) -> SynthSlide:
    """Write ``<name>.svs`` (square, ``size_px`` per side) and its ground truth into ``out_dir``.

    With ``crops_dir`` the rare classes are real crops pasted in (composited mode); normal and
    inflammatory cells stay synthetic; ``crops_split`` ("test") pastes only the crops held out of
    ``wsi data composite`` training sets. Same arguments, same bytes of ground truth.

    Example:
        >>> s = generate_slide("/tmp/synth", 2048, seed=1, progress=False)  # doctest: +SKIP
        >>> s.slide_path.name, s.most_severe  # doctest: +SKIP
        ('synth_s1_2048.svs', 'SCC')
    """
    started = time.perf_counter()
    taxonomy = taxonomy or load_taxonomy()
    cfg = config if isinstance(config, SynthConfig) else load_synth_config(config, taxonomy)
    if not MIN_SIZE <= size_px <= MAX_SIZE:
        raise ConfigError(None, f"--size must be between {MIN_SIZE} and {MAX_SIZE} px, got {size_px}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = name or f"synth_s{seed}_{size_px}"
    bank = CropBank.load(crops_dir, cfg.composite, split=crops_split) if crops_dir else None

    def crop_box(class_name: str, index: int):
        import numpy as np

        path = bank.pick(class_name, np.random.default_rng([seed, index, 3])) if bank else None
        return (path, crop_od(path, seed, index, mpp, cfg.composite)[3]) if path else None

    layout = plan_slide(size_px, size_px, mpp, seed, cfg.slide, taxonomy, crop_box if bank else None)
    counts = layout.counts(taxonomy.names)
    log.info("Slide %s: %d x %d px at %.3g um/px, %d cells in a %.1f mm^2 preparation (%s)", name, size_px, size_px,
             mpp, len(layout.cells), layout.area_mm2, ", ".join(f"{k} {v}" for k, v in counts.items() if v))
    renderer = SlideRenderer(layout, bank)
    tile = cfg.slide.tile_size
    n_tiles = (-(-size_px // tile)) ** 2
    bar = progress_bar(total=n_tiles, desc=f"drawing {name}", unit="tile", disable=not progress)

    def read_tile(x: int, y: int, w: int, h: int):
        bar.update(1)
        return renderer.read_tile(x, y, w, h)

    slide_path = out / f"{name}.svs"
    try:
        write_pyramidal_tiff(slide_path, size_px, size_px, read_tile, mpp, tile_size=tile,
                             quality=cfg.slide.jpeg_quality, description_extra=f"Synthetic TCT seed {seed}")
    finally:
        bar.close()
    annotations = [Annotation(c.box, c.class_name) for c in layout.cells]
    severe = most_severe(counts, taxonomy)
    geojson_path = write_geojson(out / f"{name}.cells.geojson", annotations, taxonomy)
    coco_path = write_coco(out / f"{name}.coco.json", annotations, taxonomy,
                           {"file_name": slide_path.name, "width": size_px, "height": size_px})
    truth_path = _write_json(out / f"{name}.truth.json", {
        "slide": slide_path.name,
        "width": size_px,
        "height": size_px,
        "mpp": mpp,
        "seed": seed,
        "composited": bool(bank),
        "preparation": {"centre": list(layout.centre), "radius_px": layout.radius_px, "area_mm2": round(layout.area_mm2, 4)},
        "most_severe": severe,
        "abnormal": severe != taxonomy.names[0],
        "counts": counts,
        "taxonomy": taxonomy.names,
    })
    seconds = time.perf_counter() - started
    log.info("Wrote %s in %.1f s; most severe class present: %s", slide_path, seconds, severe)
    return SynthSlide(slide_path, geojson_path, coco_path, truth_path, layout.cells, counts, severe, seconds)
