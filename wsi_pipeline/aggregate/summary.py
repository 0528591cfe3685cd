"""Slide-level aggregation: from one row per detected cell to what a cytologist reads first.

Every threshold comes from the ``report`` section of the config (configs/default.yaml); the
rules are documented in docs/report.md:

* a cell **counts** for its predicted class when its score is at least the class threshold;
* the **category** is the most severe abnormal class with at least ``min_cells`` counted cells
  (per class: ``class_min_cells``), else NILM; organisms (taxonomy group ``organism``) with
  enough cells are flagged separately and never change the category;
* the **suspicion score** ranks slides in a batch (see :func:`suspicion_score`);
* **adequacy** compares counted squamous cells (NILM + squamous abnormal classes) against the
  Bethesda minimum for the preparation (``report.preparation``: 5,000 for liquid-based, 8,000 for
  conventional smears) unless ``report.adequacy_min_squamous`` sets another. The count is an estimate
  from the detector: missed or merged cells make it low, so "limited" is a prompt to look, not a verdict.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..config import PREPARATIONS, ReportConfig, check_report_classes
from ..store.contracts import DetectionsMeta, ReportSection
from ..store.detections import Detections
from ..taxonomy import CellClass, Taxonomy
from .counting import counted_mask

NEGATIVE_CATEGORY = "NILM"
ORGANISM_GROUP = "organism"
SQUAMOUS_GROUP = "squamous"

SUSPICION_FORMULA = (
    "mean of the K largest values of score(cell, class) * severity(class) / max severity, over every "
    "detection and every abnormal class, with missing values counted as 0 (K = report.suspicion_top_k)"
)
ADEQUACY_NOTE = (
    "estimate: counted squamous cells (NILM and squamous abnormal classes above threshold) from the "
    "detector, not a manual count"
)


@dataclass(frozen=True)
class ClassSummary(CellClass):
    """A taxonomy class with its counts, density and score statistics on the slide."""

    score_threshold: float
    min_cells: int
    n_detected: int  # rows of the table with this predicted class, any score
    n_counted: int  # ... with score >= score_threshold
    density_per_mm2: float | None  # n_counted / cell-bearing area; None when the area is unknown
    score_mean: float | None  # statistics over the counted cells; None when there are none
    score_median: float | None
    score_max: float | None


@dataclass
class TopCell:
    """One of the most suspicious cells: where it is (level-0 px) and how sure the detector is."""

    rank: int  # 1 = highest score within its class
    row: int  # row in the detections table
    class_name: str
    score: float
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 level-0 px
    patch_index: int

    @property
    def center(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.box
        return (x0 + x1) / 2, (y0 + y1) / 2


@dataclass
class Category(ReportSection):
    """Bethesda-style slide category and the organisms flagged beside it (``category`` in report.json)."""

    name: str = ""
    label: str = ""
    severity: int = 0
    evidence_cells: int = 0  # counted cells of the category class (0 for NILM)
    organisms: list[str] = field(default_factory=list)


@dataclass
class Adequacy(ReportSection):
    """The adequacy estimate (``adequacy`` in report.json)."""

    status: str = ""  # adequate | limited
    squamous_cells: int = 0
    minimum: int = 0
    preparation: str = "liquid_based"
    minimum_source: str = ""  # why this minimum: the Bethesda value for the preparation, or the config
    note: str = ADEQUACY_NOTE


@dataclass
class SlideSummary:
    """Everything the report says about one slide, computed from the detections alone."""

    classes: list[ClassSummary]
    category: Category
    suspicion_score: float
    suspicion_top_k: int
    adequacy: Adequacy
    top_cells: dict[str, list[TopCell]]  # abnormal class name -> cells, best first
    cell_area_mm2: float | None
    n_detections: int

    def by_name(self, name: str) -> ClassSummary:
        for c in self.classes:
            if c.name == name:
                return c
        raise KeyError(name)

    def counted_mask(self, det: Detections) -> np.ndarray:
        """Boolean mask of the table's rows that count for their class (score >= class threshold)."""
        return counted_mask(det.scores, det.labels, [c.score_threshold for c in self.classes])

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["top_cells"] = {
            name: [{**asdict(c), "box": list(c.box), "center": list(c.center)} for c in cells]
            for name, cells in self.top_cells.items()
        }
        return out


def class_thresholds(taxonomy: Taxonomy, cfg: ReportConfig) -> tuple[list[float], list[int]]:
    """Per-class score thresholds and minimum cell counts, in taxonomy order.

    A class named in the config but absent from the taxonomy is a :class:`ConfigError`.

    Example:
        >>> from wsi_pipeline.taxonomy import load_taxonomy
        >>> thr, mins = class_thresholds(load_taxonomy(), ReportConfig(class_score_thresholds={"SCC": 0.3}))
        >>> thr[0], thr[-3], mins[6]
        (0.5, 0.3, 1)
    """
    check_report_classes(cfg, taxonomy.names, "report config")
    thresholds = [float(cfg.class_score_thresholds.get(n, cfg.score_threshold)) for n in taxonomy.names]
    minimums = [int(cfg.class_min_cells.get(n, cfg.min_cells)) for n in taxonomy.names]
    return thresholds, minimums


def suspicion_score(class_scores: np.ndarray, taxonomy: Taxonomy, top_k: int) -> float:
    """Continuous slide suspicion in [0, 1] to sort a batch (formula: :data:`SUSPICION_FORMULA`).

    Weighting by severity ranks one confident HSIL cell above one confident ASC-US cell; padding
    with zeros ranks a slide with ten suspicious cells above a slide with one.

    Example:
        >>> from wsi_pipeline.taxonomy import load_taxonomy
        >>> tax = load_taxonomy()
        >>> s = np.zeros((2, len(tax)), np.float32); s[0, tax.index("SCC")] = 0.8
        >>> round(suspicion_score(s, tax, top_k=2), 3)
        0.4
    """
    abnormal = [i for i, c in enumerate(taxonomy.classes) if c.abnormal]
    if not abnormal or class_scores.shape[0] == 0 or top_k < 1:
        return 0.0
    max_severity = max(taxonomy[i].severity for i in abnormal) or 1
    weights = np.array([taxonomy[i].severity / max_severity for i in abnormal], np.float32)
    weighted = (class_scores[:, abnormal] * weights).ravel()
    k = min(top_k, weighted.size)
    best = np.partition(weighted, weighted.size - k)[weighted.size - k :]
    return float(np.clip(best.sum() / top_k, 0.0, 1.0))


def summarize(det: Detections, taxonomy: Taxonomy, cfg: ReportConfig) -> SlideSummary:
    """Aggregate a detections table into a :class:`SlideSummary` (counts, category, score, adequacy).

    Example:
        >>> from wsi_pipeline.taxonomy import load_taxonomy
        >>> tax = load_taxonomy()
        >>> det = Detections.empty(len(tax))
        >>> s = summarize(det, tax, ReportConfig())
        >>> s.category.name, s.suspicion_score, s.adequacy.status
        ('NILM', 0.0, 'limited')
    """
    thresholds, minimums = class_thresholds(taxonomy, cfg)
    area = _cell_area_mm2(det.meta)
    labels = det.labels.astype(np.int64)
    scores = det.scores.astype(np.float32)
    counted = counted_mask(scores, labels, thresholds)

    classes: list[ClassSummary] = []
    top_cells: dict[str, list[TopCell]] = {}
    for i, cc in enumerate(taxonomy.classes):
        of_class = labels == i
        chosen = np.flatnonzero(of_class & counted)
        s = scores[chosen]
        classes.append(
            ClassSummary(
                **vars(cc), score_threshold=thresholds[i], min_cells=minimums[i],
                n_detected=int(of_class.sum()), n_counted=int(chosen.size),
                density_per_mm2=chosen.size / area if area else None,
                score_mean=float(s.mean()) if s.size else None,
                score_median=float(np.median(s)) if s.size else None,
                score_max=float(s.max()) if s.size else None,
            )
        )
        if cc.abnormal and chosen.size:
            order = chosen[np.argsort(-s, kind="stable")][: cfg.top_k]
            top_cells[cc.name] = [
                TopCell(rank=r + 1, row=int(j), class_name=cc.name, score=float(scores[j]),
                        box=tuple(float(v) for v in det.boxes[j]), patch_index=int(det.patch_index[j]))
                for r, j in enumerate(order)
            ]

    return SlideSummary(
        classes=classes,
        category=_category(classes, taxonomy),
        suspicion_score=suspicion_score(det.class_scores.astype(np.float32), taxonomy, cfg.suspicion_top_k),
        suspicion_top_k=cfg.suspicion_top_k,
        adequacy=_adequacy(classes, cfg),
        top_cells=top_cells,
        cell_area_mm2=area,
        n_detections=len(det),
    )


def _category(classes: list[ClassSummary], taxonomy: Taxonomy) -> Category:
    organisms = [c.name for c in classes if c.group == ORGANISM_GROUP and c.n_counted >= c.min_cells]
    evidenced = [c for c in classes if c.abnormal and c.n_counted >= c.min_cells]
    if evidenced:
        worst = max(evidenced, key=lambda c: c.severity)  # ties: the earlier class in the taxonomy
        return Category(worst.name, worst.label, worst.severity, worst.n_counted, organisms)
    label = taxonomy[NEGATIVE_CATEGORY].label if NEGATIVE_CATEGORY in taxonomy.names else "Negative"
    return Category(NEGATIVE_CATEGORY, label, 0, 0, organisms)


def _adequacy(classes: list[ClassSummary], cfg: ReportConfig) -> Adequacy:
    squamous = sum(c.n_counted for c in classes if c.group == SQUAMOUS_GROUP)
    preparation = cfg.preparation.replace("_", "-")
    if cfg.adequacy_min_squamous is None:
        minimum, source = PREPARATIONS[cfg.preparation], f"Bethesda minimum for {preparation} preparations"
    else:
        minimum, source = cfg.adequacy_min_squamous, "report.adequacy_min_squamous in the config"
    return Adequacy("adequate" if squamous >= minimum else "limited", squamous, minimum, cfg.preparation, source)


def _cell_area_mm2(meta: DetectionsMeta | None) -> float | None:
    area = meta.store.cell_area_mm2 if meta is not None and meta.store is not None else None
    return float(area) if isinstance(area, (int, float)) and area > 0 else None
