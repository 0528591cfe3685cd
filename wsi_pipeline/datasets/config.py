"""What the dataset builders read of ``configs/synth.yaml``: the ``dataset`` section and the annotation
``label_aliases``. Defined here, below ``synth`` (whose :class:`~wsi_pipeline.synth.config.SynthConfig`
extends :class:`DatasetSettings` with the slide generator's sections), so that ``datasets`` never imports
``synth``.

Example:
    >>> s = load_dataset_settings()
    >>> s.dataset.patch_size, s.label_aliases["ascus"]
    (512, 'ASC-US')
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import CONFIG_DIR, from_dict, merge, read_yaml
from ..errors import ConfigError
from ..resolution import DEFAULT_TARGET_MPP
from ..taxonomy import Taxonomy, load_taxonomy

DEFAULT_SYNTH_CONFIG = CONFIG_DIR / "synth.yaml"
DATASET_SECTIONS = ("dataset", "label_aliases")


@dataclass
class DatasetConfig:
    target_mpp: float = DEFAULT_TARGET_MPP
    patch_size: int = 512
    background_ratio: float = 1.0
    min_visible_fraction: float = 0.5
    min_box_px: int = 6
    jpeg_quality: int = 92
    rare_classes: list[str] = field(default_factory=list)
    point_box_um: float = 20.0


@dataclass
class DatasetSettings:
    """Patch-set extraction settings and the labels that map annotation names to taxonomy classes."""

    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    label_aliases: dict[str, str] = field(default_factory=dict)


def read_synth_yaml(path: str | Path | None) -> tuple[dict[str, Any], str]:
    """``configs/synth.yaml`` merged with ``path``, and the name to blame in errors."""
    data = read_yaml(DEFAULT_SYNTH_CONFIG)
    if path is None:
        return data, str(DEFAULT_SYNTH_CONFIG)
    return merge(data, read_yaml(path)), str(path)


def load_dataset_settings(taxonomy: Taxonomy | None = None) -> DatasetSettings:
    """The ``dataset`` and ``label_aliases`` sections of ``configs/synth.yaml`` (a file of the user's is read
    whole, by ``synth.config.load_synth_config``)."""
    data, source = read_synth_yaml(None)
    settings = from_dict(DatasetSettings, {k: data[k] for k in DATASET_SECTIONS if k in data}, "", source)
    check_dataset_settings(settings, taxonomy or load_taxonomy(), source)
    return settings


def label_aliases(taxonomy: Taxonomy | None = None) -> dict[str, str]:
    """Annotation label -> taxonomy class, from ``configs/synth.yaml``."""
    return load_dataset_settings(taxonomy).label_aliases


def check_classes(used: list[tuple[str, Any]], taxonomy: Taxonomy, source: str) -> None:
    """Every class named in ``used`` (``(config key, names)`` pairs) is in the taxonomy."""
    for where, classes in used:
        unknown = sorted(set(classes) - set(taxonomy.names))
        if unknown:
            raise ConfigError(source, f"'{where}' names unknown class {unknown[0]!r} (taxonomy: {', '.join(taxonomy.names)})")


def check_dataset_settings(settings: DatasetSettings, taxonomy: Taxonomy, source: str) -> None:
    d = settings.dataset
    check_classes([("dataset.rare_classes", d.rare_classes), ("label_aliases", settings.label_aliases.values())],
                  taxonomy, source)
    checks = [
        (1 <= d.jpeg_quality <= 100, "jpeg_quality must be 1-100"),
        (0.05 <= d.target_mpp <= 20, "dataset.target_mpp must be between 0.05 and 20 um/px"),
        (32 <= d.patch_size <= 4096, "dataset.patch_size must be between 32 and 4096 px"),
        (d.background_ratio >= 0, "dataset.background_ratio must be >= 0"),
        (2.0 <= d.point_box_um <= 200.0, "dataset.point_box_um must be between 2 and 200 um"),
        (0 < d.min_visible_fraction <= 1, "dataset.min_visible_fraction must be in (0, 1]"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(source, message)


__all__ = ["DatasetConfig", "DatasetSettings", "check_dataset_settings", "label_aliases", "load_dataset_settings"]
