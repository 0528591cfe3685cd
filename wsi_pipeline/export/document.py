"""The ``report.json`` document: one typed contract, written by ``write_report`` and read by everything else.

``wsi-run`` (skipping a finished slide, the batch summary), ``wsi summarize`` and ``wsi data negatives``
read a report only through :class:`ReportDocument`. Like the stage contracts in ``store/contracts.py``, a
key the document does not know is a one-line :class:`ArtifactError`. Every key has a default, so a report
written by an older version (fewer sections) still reads. Schema: docs/report.md.

Example:
    >>> doc = ReportDocument.from_dict({"category": {"name": "HSIL"}, "suspicion_score": 0.4}, "report.json")
    >>> doc.category.name, doc.specimen is None
    ('HSIL', True)
    >>> ReportDocument.from_dict({"colour": 1}, "report.json")
    Traceback (most recent call last):
    wsi_pipeline.errors.ArtifactError: report.json: unknown key 'colour' in the report
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ..aggregate.specimen import SpecimenCheck
from ..aggregate.summary import Adequacy, Category
from ..errors import ArtifactError
from ..fsutil import atomic_write
from ..store.contracts import Contract, ReportSection, ReportSlide

REPORT_SCHEMA = "wsi_pipeline.report"
REPORT_SCHEMA_VERSION = 1


@dataclass
class ReportDocument(ReportSection):
    """``report.json``. Sections copied from the detections metadata (``tiling``, ``model``, ``inference``)
    and the per-class and per-cell lists stay plain mappings; what readers decide on is typed."""

    NESTED: ClassVar[dict[str, type[Contract]]] = {
        "slide": ReportSlide, "category": Category, "adequacy": Adequacy, "specimen": SpecimenCheck,
    }
    OPTIONAL: ClassVar[tuple[str, ...]] = ("specimen", "morphometry", "review")  # left out when None
    schema: str = REPORT_SCHEMA
    version: int = REPORT_SCHEMA_VERSION
    generated_utc: str = ""
    notice: str = ""
    software: dict[str, Any] = field(default_factory=dict)
    slide: ReportSlide = field(default_factory=ReportSlide)
    tiling: dict[str, Any] = field(default_factory=dict)  # StoreRecord without its path
    model: dict[str, Any] = field(default_factory=dict)  # ModelRecord without its path, plus the file name
    inference: dict[str, Any] = field(default_factory=dict)  # InferenceRecord
    thresholds: dict[str, Any] = field(default_factory=dict)
    n_detections: int = 0
    n_cells_counted: int = 0
    cell_area_mm2: float | None = None
    classes: list[dict[str, Any]] = field(default_factory=list)
    category: Category = field(default_factory=Category)
    suspicion_score: float | None = None
    suspicion: dict[str, Any] = field(default_factory=dict)
    adequacy: Adequacy = field(default_factory=Adequacy)
    top_cells: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    specimen: SpecimenCheck | None = None
    morphometry: dict[str, Any] | None = None
    review: dict[str, Any] | None = None  # only for slides a reader reviewed

    @property
    def model_geometry(self) -> tuple[float, int]:
        """The detector's ``(target_mpp, patch_size)``; zeros when the report does not record them."""
        return float(self.model.get("target_mpp") or 0), int(self.model.get("patch_size") or 0)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in super().to_dict().items() if not (k in self.OPTIONAL and v is None)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"

    def write(self, path: str | Path) -> Path:
        """Write atomically (the report's completion marker)."""
        return atomic_write(Path(path), self.to_json())

    @classmethod
    def read(cls, path: str | Path) -> ReportDocument:
        """Parse ``path``; an unreadable file or an unknown key is an :class:`ArtifactError`."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ArtifactError(path, f"unreadable report ({exc.__class__.__name__})") from None
        return cls.from_dict(data, path)


__all__ = ["REPORT_SCHEMA", "REPORT_SCHEMA_VERSION", "ReportDocument", "ReportSlide"]
