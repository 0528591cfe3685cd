"""Typed contracts of the metadata stages exchange (docs/artifacts.md).

Each versioned artifact's metadata is one dataclass here; writers build it and serialise it with
``to_dict``, readers parse it with ``from_dict(data, source)``. A key the dataclass does not
know, or a required key that is missing, is an :class:`ArtifactError` naming the file and the key:

* :class:`SlideInfo`: the source slide (``Slide.info()``), recorded in the store and the detections;
* :class:`StoreMeta`: the patch store's group attributes (``patches.zarr/zarr.json``, key ``wsi_pipeline``);
* :class:`DetectionsMeta`: the detections table's Parquet metadata (key ``wsi_pipeline``), with its
  sections :class:`StoreRecord`, :class:`ModelRecord` and :class:`InferenceRecord`;
* :class:`ModelMeta`: what inference and the batch runner read from a checkpoint's ``meta``;
* :class:`ReportSection`: the base of the typed sections of ``report.json`` (``export/document.py``), such as
  :class:`ReportSlide`.

Example:
    >>> meta = DetectionsMeta.from_dict({"schema": "wsi_pipeline.detections", "version": 1, "complete": True,
    ...                                  "taxonomy": ["NILM"], "slide": {"width": 10, "height": 5}}, "d.parquet")
    >>> meta.slide.width, meta.store is None
    (10, True)
    >>> DetectionsMeta.from_dict({"taxonomy": ["NILM"], "complete": True, "colour": 1}, "d.parquet")
    Traceback (most recent call last):
    wsi_pipeline.errors.ArtifactError: d.parquet: unknown key 'colour' in the detections metadata
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from ..errors import ArtifactError

T = TypeVar("T", bound="Contract")
Source = str | Path | None

STORE_SCHEMA = "wsi_pipeline.patches"
STORE_VERSION = 1
DETECTIONS_SCHEMA = "wsi_pipeline.detections"
DETECTIONS_VERSION = 1


class Contract:
    """Shared ``to_dict`` / ``from_dict`` of the contract dataclasses (nested contracts are parsed too)."""

    WHAT: ClassVar[str] = "metadata"  # how the error message names this section
    NESTED: ClassVar[dict[str, type[Contract]]] = {}

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            out[f.name] = value.to_dict() if isinstance(value, Contract) else _plain(value)
        return out

    @classmethod
    def from_dict(cls: type[T], data: Any, source: Source = None, prefix: str = "") -> T:
        """Parse ``data``; unknown keys and missing required keys are one-line errors naming ``source``."""
        where = f"the {cls.WHAT}"
        if not isinstance(data, Mapping):
            raise ArtifactError(source, f"{prefix.rstrip('.') or cls.WHAT} is not a mapping in {where}")
        known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
        for key in data:
            if key not in known:
                raise ArtifactError(source, f"unknown key '{prefix}{key}' in {where}")
        for name, f in known.items():
            if name not in data and f.default is MISSING and f.default_factory is MISSING:
                raise ArtifactError(source, f"missing key '{prefix}{name}' in {where}")
        values = dict(data)
        for name, sub in cls.NESTED.items():
            if values.get(name) is not None:
                values[name] = sub.from_dict(values[name], source, f"{prefix}{name}.")
        return cls(**values)


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, dict):
        return dict(value)
    return value


@dataclass
class SlideInfo(Contract):
    """The source slide as recorded by ``Slide.info()`` (never pixels, never label data)."""

    WHAT: ClassVar[str] = "slide description"
    path: str = ""
    name: str = ""
    width: int = 0
    height: int = 0
    mpp: list[float] = field(default_factory=list)
    mpp_source: str = ""
    fingerprint: str = ""
    vendor: str = ""
    backend: str = ""

    @property
    def mpp_x(self) -> float | None:
        """Recorded level-0 um/px along x, or None when unknown."""
        return float(self.mpp[0]) if self.mpp and self.mpp[0] else None


@dataclass
class StoreMeta(Contract):
    """Attributes of a patch store (``patches.zarr``), written by ``wsi tile``; layout in docs/store.md."""

    WHAT: ClassVar[str] = "patch store attributes"
    NESTED: ClassVar[dict[str, type[Contract]]] = {"slide": SlideInfo}
    identity: str
    n_patches: int
    patch_size: int
    overlap: int
    target_mpp: float
    scale: float
    level: int
    codec: str
    patches_per_chunk: int
    schema: str = STORE_SCHEMA
    version: int = STORE_VERSION
    complete: bool = False
    software: str = ""
    created: str = ""
    completed: str = ""
    slide: SlideInfo = field(default_factory=SlideInfo)
    jpeg_quality: int | None = None
    coords: str = "level-0 pixels, top-left corner (x, y)"
    # written by tiling (tile_slide) about the mask and the grid
    level_downsample: float | None = None
    read_size: int | None = None
    n_grid: int | None = None
    cell_area_mm2: float = 0.0
    kept_area_mm2: float | None = None
    kept_fraction: float | None = None
    mask: dict[str, Any] | None = None
    seconds: float | None = None  # tiling time of the run that completed the store


@dataclass
class StoreRecord(Contract):
    """The ``store`` section of the detections metadata: which patch store was read."""

    WHAT: ClassVar[str] = "detections metadata"
    path: str = ""
    fingerprint: str = ""
    target_mpp: float | None = None
    patch_size: int | None = None
    overlap: int | None = None
    n_patches: int | None = None
    cell_area_mm2: float | None = None
    seconds: float | None = None  # tiling time (StoreMeta.seconds), reported as timings.tiling_s


@dataclass
class ModelRecord(Contract):
    """The ``model`` section of the detections metadata: which checkpoint made the detections."""

    WHAT: ClassVar[str] = "detections metadata"
    path: str = ""
    sha256: str = ""
    target_mpp: float | None = None
    patch_size: int | None = None
    created: str = ""
    detector: str = ""
    backbone: str = ""
    loss: str = ""
    trained_on: str = ""
    architecture: str = ""  # free-text name of a model that is not a wsi_pipeline checkpoint


@dataclass
class InferenceRecord(Contract):
    """The ``inference`` section of the detections metadata: how detection ran."""

    WHAT: ClassVar[str] = "detections metadata"
    device: str = ""
    precision: str = ""
    batch_size: int | None = None
    seconds: float | None = None
    score_threshold: float | None = None
    nms_iou: float | None = None
    cut_cell_ios: float | None = None
    software: str = ""
    backend: str = ""  # torch | onnxruntime: what ran the network (docs/inference.md); "" in older tables


@dataclass
class DetectionsMeta(Contract):
    """Metadata of ``detections.parquet`` (Parquet key ``wsi_pipeline``), written by ``wsi detect``."""

    WHAT: ClassVar[str] = "detections metadata"
    NESTED: ClassVar[dict[str, type[Contract]]] = {
        "slide": SlideInfo, "store": StoreRecord, "model": ModelRecord, "inference": InferenceRecord,
    }
    taxonomy: list[str]
    complete: bool
    schema: str = DETECTIONS_SCHEMA
    version: int = DETECTIONS_VERSION
    slide: SlideInfo | None = None
    store: StoreRecord | None = None
    model: ModelRecord | None = None
    inference: InferenceRecord | None = None
    identity: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Sections that were never recorded are left out (not written as null)."""
        return {k: v for k, v in super().to_dict().items() if v is not None}


class ReportSection(Contract):
    """A section of ``report.json`` (``export/document.py`` ``ReportDocument``); every key has a default."""

    WHAT: ClassVar[str] = "report"


@dataclass
class ReportSlide(ReportSection):
    """The ``slide`` section: the analysed slide, its filtered scanner properties, and whether its pixels were read."""

    name: str = ""
    path: str = ""
    width: int | None = None
    height: int | None = None
    mpp: list[float] | None = None
    fingerprint: str = ""
    vendor: str = ""
    scanner_properties: dict[str, str] = field(default_factory=dict)
    pixels_available: bool = False
    note: str = ""  # why the pixels were not available (thumbnail and crops omitted)

    @property
    def mpp_x(self) -> float | None:
        """Level-0 um/px along x, or None when not recorded."""
        return float(self.mpp[0]) if self.mpp and self.mpp[0] else None


@dataclass
class ModelMeta(Contract):
    """The ``meta`` of a checkpoint (models/checkpoint.py) as inference and the batch runner read it.

    ``sha256`` and ``path`` are added by ``load_checkpoint``; a stand-in model (tests) may give only the
    required keys.
    """

    WHAT: ClassVar[str] = "model metadata"
    taxonomy: list[str]
    target_mpp: float
    patch_size: int
    architecture: Any = None  # DetectorSpec.to_dict() (a free-text name for stand-ins)
    taxonomy_full: dict[str, Any] | None = None
    normalisation: dict[str, Any] | None = None
    loss: dict[str, Any] | None = None
    training: dict[str, Any] | None = None
    software: dict[str, Any] | None = None
    created: str = ""
    weights_dtype: str = "float32"  # float16 in exported / bundled checkpoints (`wsi model export`)
    model_card: dict[str, Any] | None = None  # data, recipe and validation of a bundled model
    sha256: str = ""
    path: str = ""

    def record(self, path: str | Path | None, sha256: str) -> ModelRecord:
        """The ``model`` section written into the detections metadata."""
        arch = self.architecture if isinstance(self.architecture, Mapping) else {}
        return ModelRecord(
            path=str(path) if path else self.path, sha256=sha256, target_mpp=float(self.target_mpp),
            patch_size=int(self.patch_size), created=self.created, detector=str(arch.get("detector", "")),
            backbone=str(arch.get("backbone", "")), loss=str((self.loss or {}).get("name", "")),
            trained_on=str((self.training or {}).get("dataset", "")),
            architecture=self.architecture if isinstance(self.architecture, str) else "",
        )


__all__ = [f.__name__ for f in (SlideInfo, StoreMeta, StoreRecord, ModelRecord, InferenceRecord, DetectionsMeta,
                                ReportSlide, ModelMeta)] + ["Contract", "ReportSection"]
