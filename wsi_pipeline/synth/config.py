"""Settings of the synthetic-slide generator and the training-set extractor (``configs/synth.yaml``); the
extractor's own sections are ``datasets/config.py`` ``DatasetSettings``, which :class:`SynthConfig` extends.

Example:
    >>> cfg = load_synth_config()
    >>> cfg.slide.mpp, cfg.dataset.patch_size, cfg.slide.min_count["HSIL"]
    (0.25, 512, 2)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..config import from_dict
from ..datasets.config import DatasetSettings, check_classes, check_dataset_settings, read_synth_yaml
from ..errors import ConfigError
from ..resolution import CROPS_MPP
from ..taxonomy import Taxonomy, load_taxonomy


@dataclass
class SlideSynthConfig:
    mpp: float = 0.25
    tile_size: int = 512
    jpeg_quality: int = 85
    preparation_diameter_mm: float = 20.0
    preparation_fraction: float = 0.92
    density_per_mm2: dict[str, float] = field(default_factory=dict)
    min_count: dict[str, int] = field(default_factory=dict)
    inflammatory_cluster_max: int = 12
    blurred_fraction: float = 0.15


@dataclass
class CompositeConfig:
    crops_mpp: float = CROPS_MPP
    scale_jitter: float = 0.15
    feather_px: int = 6
    crop_classes: dict[str, str] = field(default_factory=dict)


@dataclass
class SynthConfig(DatasetSettings):
    """The whole of ``configs/synth.yaml``: the dataset builders' sections plus the slide generator's."""

    slide: SlideSynthConfig = field(default_factory=SlideSynthConfig)
    composite: CompositeConfig = field(default_factory=CompositeConfig)


def load_synth_config(path: str | Path | None = None, taxonomy: Taxonomy | None = None) -> SynthConfig:
    """Defaults from ``configs/synth.yaml`` merged with ``path``; class names checked against the taxonomy."""
    data, source = read_synth_yaml(path)
    cfg = from_dict(SynthConfig, data, "", source)
    taxonomy = taxonomy or load_taxonomy()
    _check(cfg, taxonomy, source)
    check_dataset_settings(cfg, taxonomy, source)
    return cfg


def _check(cfg: SynthConfig, taxonomy: Taxonomy, source: str) -> None:
    s = cfg.slide
    check_classes([("slide.density_per_mm2", s.density_per_mm2), ("slide.min_count", s.min_count),
                   ("composite.crop_classes", cfg.composite.crop_classes.values())], taxonomy, source)
    checks = [
        (0.05 <= s.mpp <= 2.0, "slide.mpp must be between 0.05 and 2 um/px"),
        (s.tile_size in (256, 512, 1024), "slide.tile_size must be 256, 512 or 1024"),
        (1 <= s.jpeg_quality <= 100, "jpeg_quality must be 1-100"),
        (0 < s.preparation_fraction <= 1, "slide.preparation_fraction must be in (0, 1]"),
        (all(v >= 0 for v in s.density_per_mm2.values()), "slide.density_per_mm2 values must be >= 0"),
        (all(v >= 0 for v in s.min_count.values()), "slide.min_count values must be >= 0"),
        (s.inflammatory_cluster_max >= 1, "slide.inflammatory_cluster_max must be >= 1"),
        (0 <= s.blurred_fraction <= 1, "slide.blurred_fraction must be in [0, 1]"),
        (cfg.composite.crops_mpp > 0, "composite.crops_mpp must be > 0"),
        (0 <= cfg.composite.scale_jitter < 1, "composite.scale_jitter must be in [0, 1)"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(source, message)
