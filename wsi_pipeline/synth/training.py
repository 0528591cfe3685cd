"""A small long-tailed detection training set in seconds: a few synthetic slides, then patch extraction."""

from __future__ import annotations

from pathlib import Path

from ..taxonomy import load_taxonomy
from .config import SynthConfig, load_synth_config
from ..datasets.slides import DatasetSummary, extract_dataset
from .slide import generate_slide


def make_training_set(
    out_dir: str | Path,
    n_slides: int = 2,
    size_px: int = 6000,
    crops_dir: str | Path | None = None,
    target_mpp: float | None = None,
    patch_size: int | None = None,
    seed: int = 0,
    background_ratio: float | None = None,
    config: SynthConfig | str | Path | None = None,
    progress: bool = False,
) -> DatasetSummary:
    """Generate ``n_slides`` slides (seeds ``seed``, ``seed + 1``, ...) under ``out_dir/slides`` and cut
    a COCO patch dataset from them into ``out_dir`` (see :func:`extract_dataset` for the layout).

    Example:
        >>> s = make_training_set("/tmp/train_set", n_slides=2, size_px=4096)  # doctest: +SKIP
        >>> s.class_counts["HSIL"] >= 2  # doctest: +SKIP
        True
    """
    taxonomy = load_taxonomy()
    cfg = config if isinstance(config, SynthConfig) else load_synth_config(config, taxonomy)
    slides_dir = Path(out_dir) / "slides"
    pairs = []
    for i in range(n_slides):
        s = generate_slide(slides_dir, size_px, seed=seed + i, mpp=cfg.slide.mpp, config=cfg, crops_dir=crops_dir,
                           taxonomy=taxonomy, progress=progress)
        pairs.append((s.slide_path, s.geojson_path))
    return extract_dataset(pairs, out_dir, target_mpp, patch_size, background_ratio, seed, cfg, taxonomy, progress=progress)
