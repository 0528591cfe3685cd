"""Settings of the synthetic-slide generator and the training-set extractor (``configs/synth.yaml``).

Example:
    >>> cfg = load_synth_config()
    >>> cfg.slide.mpp, cfg.dataset.patch_size, cfg.slide.min_count["HSIL"]
    (0.25, 512, 2)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..config import CONFIG_DIR, from_dict, merge, read_yaml
from ..errors import ConfigError
from ..taxonomy import Taxonomy, load_taxonomy

DEFAULT_SYNTH_CONFIG = CONFIG_DIR / "synth.yaml"


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
    crops_mpp: float = 0.3
    scale_jitter: float = 0.15
    feather_px: int = 6
    crop_classes: dict[str, str] = field(default_factory=dict)


@dataclass
class DatasetConfig:
    target_mpp: float = 0.5
    patch_size: int = 512
    background_ratio: float = 1.0
    min_visible_fraction: float = 0.5
    min_box_px: int = 6
    jpeg_quality: int = 92
    rare_classes: list[str] = field(default_factory=list)
    point_box_um: float = 20.0


@dataclass
class SynthConfig:
    slide: SlideSynthConfig = field(default_factory=SlideSynthConfig)
    composite: CompositeConfig = field(default_factory=CompositeConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    label_aliases: dict[str, str] = field(default_factory=dict)


def load_synth_config(path: str | Path | None = None, taxonomy: Taxonomy | None = None) -> SynthConfig:
    """Defaults from ``configs/synth.yaml`` merged with ``path``; class names checked against the taxonomy."""
    data = read_yaml(DEFAULT_SYNTH_CONFIG)
    source = str(DEFAULT_SYNTH_CONFIG)
    if path is not None:
        data = merge(data, read_yaml(path))
        source = str(path)
    cfg = from_dict(SynthConfig, data, "", source)
    _check(cfg, taxonomy or load_taxonomy(), source)
    return cfg


def _check(cfg: SynthConfig, taxonomy: Taxonomy, source: str) -> None:
    names = set(taxonomy.names)
    s, d = cfg.slide, cfg.dataset
    used = [
        ("slide.density_per_mm2", s.density_per_mm2),
        ("slide.min_count", s.min_count),
        ("composite.crop_classes", cfg.composite.crop_classes.values()),
        ("dataset.rare_classes", d.rare_classes),
        ("label_aliases", cfg.label_aliases.values()),
    ]
    for where, classes in used:
        unknown = sorted(set(classes) - names)
        if unknown:
            raise ConfigError(source, f"'{where}' names unknown class {unknown[0]!r} (taxonomy: {', '.join(taxonomy.names)})")
    checks = [
        (0.05 <= s.mpp <= 2.0, "slide.mpp must be between 0.05 and 2 um/px"),
        (s.tile_size in (256, 512, 1024), "slide.tile_size must be 256, 512 or 1024"),
        (1 <= s.jpeg_quality <= 100 and 1 <= d.jpeg_quality <= 100, "jpeg_quality must be 1-100"),
        (0 < s.preparation_fraction <= 1, "slide.preparation_fraction must be in (0, 1]"),
        (all(v >= 0 for v in s.density_per_mm2.values()), "slide.density_per_mm2 values must be >= 0"),
        (all(v >= 0 for v in s.min_count.values()), "slide.min_count values must be >= 0"),
        (s.inflammatory_cluster_max >= 1, "slide.inflammatory_cluster_max must be >= 1"),
        (0 <= s.blurred_fraction <= 1, "slide.blurred_fraction must be in [0, 1]"),
        (cfg.composite.crops_mpp > 0, "composite.crops_mpp must be > 0"),
        (0 <= cfg.composite.scale_jitter < 1, "composite.scale_jitter must be in [0, 1)"),
        (0.05 <= d.target_mpp <= 20, "dataset.target_mpp must be between 0.05 and 20 um/px"),
        (32 <= d.patch_size <= 4096, "dataset.patch_size must be between 32 and 4096 px"),
        (d.background_ratio >= 0, "dataset.background_ratio must be >= 0"),
        (2.0 <= d.point_box_um <= 200.0, "dataset.point_box_um must be between 2 and 200 um"),
        (0 < d.min_visible_fraction <= 1, "dataset.min_visible_fraction must be in (0, 1]"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(source, message)
