"""Cell-level evaluation on real fields: nucleus hits and circled-cell ranking.

Real annotations rarely match a detector's boxes: CRIC marks a nucleus with a 64 px square around
its centre, a reader circles an abnormal cell by hand. So a truth cell counts as **found** when a
detection that *counts* (its score at or above its class's report threshold, exactly as the slide
report counts cells) contains the truth cell's centre:

* per-class recall: found by a counted detection of the same class;
* abnormal recall: an abnormal truth cell found by a counted detection of any abnormal class;
* NILM flagged: a NILM truth nucleus whose centre lies in a counted abnormal detection;
* high grade as high grade: an ASC-H, HSIL or SCC truth cell found by a counted detection of one of
  those three classes (the grade matters more than the exact class).

For fields where only the abnormal cells are circled (``tct_marked``), :func:`circle_ranking` asks
whether the most suspicious detection (highest abnormal-class score, thresholds not applied) lies in a
circle, and how many counted abnormal detections fall outside every circle.

:func:`calibrate_thresholds` turns the same rule around: given a lab's annotated tuning cells, the
highest report threshold per class that still finds a target fraction of them.

Example:
    >>> import numpy as np
    >>> from wsi_pipeline.taxonomy import load_taxonomy
    >>> tax = load_taxonomy()
    >>> boxes = np.array([[0, 0, 20, 20], [50, 50, 70, 70]], np.float32)
    >>> labels, scores = np.array([tax.index("LSIL"), tax.index("HSIL")]), np.array([0.9, 0.3], np.float32)
    >>> truth = [TruthCell(10, 10, "LSIL"), TruthCell(60, 60, "HSIL"), TruthCell(100, 100, "NILM")]
    >>> r = nucleus_hits(boxes, labels, scores, [0.5] * len(tax.names), tax, truth)
    >>> r.per_class["LSIL"].found, r.per_class["HSIL"].found, r.abnormal_found, r.abnormal_total
    (1, 0, 1, 2)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..taxonomy import Taxonomy
from .counting import counted_mask

HIGH_GRADE_CLASSES = ("ASC-H", "HSIL", "SCC")


@dataclass(frozen=True)
class TruthCell:
    """An annotated cell's centre (level-0 px) and class."""

    x: float
    y: float
    class_name: str


@dataclass
class ClassHits:
    total: int = 0
    found: int = 0  # by a counted detection of the same class
    found_abnormal: int = 0  # by a counted detection of any abnormal class

    @property
    def recall(self) -> float | None:
        return self.found / self.total if self.total else None


@dataclass
class NucleusHitResult:
    per_class: dict[str, ClassHits] = field(default_factory=dict)
    abnormal_total: int = 0
    abnormal_found: int = 0
    nilm_total: int = 0
    nilm_flagged: int = 0
    high_grade_total: int = 0
    high_grade_found: int = 0  # by a counted detection of a high-grade class

    @property
    def abnormal_recall(self) -> float | None:
        return self.abnormal_found / self.abnormal_total if self.abnormal_total else None

    @property
    def nilm_flagged_fraction(self) -> float | None:
        return self.nilm_flagged / self.nilm_total if self.nilm_total else None

    @property
    def high_grade_recall(self) -> float | None:
        return self.high_grade_found / self.high_grade_total if self.high_grade_total else None

    def add(self, other: "NucleusHitResult") -> "NucleusHitResult":
        """Pool the counts of two fields."""
        out = NucleusHitResult({k: ClassHits(**asdict(v)) for k, v in self.per_class.items()},
                               self.abnormal_total + other.abnormal_total, self.abnormal_found + other.abnormal_found,
                               self.nilm_total + other.nilm_total, self.nilm_flagged + other.nilm_flagged,
                               self.high_grade_total + other.high_grade_total,
                               self.high_grade_found + other.high_grade_found)
        for name, hits in other.per_class.items():
            mine = out.per_class.setdefault(name, ClassHits())
            mine.total += hits.total
            mine.found += hits.found
            mine.found_abnormal += hits.found_abnormal
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "per_class": {k: {**asdict(v), "recall": v.recall} for k, v in self.per_class.items()},
            "abnormal_total": self.abnormal_total, "abnormal_found": self.abnormal_found,
            "abnormal_recall": self.abnormal_recall, "nilm_total": self.nilm_total,
            "nilm_flagged": self.nilm_flagged, "nilm_flagged_fraction": self.nilm_flagged_fraction,
            "high_grade_total": self.high_grade_total, "high_grade_found": self.high_grade_found,
            "high_grade_recall": self.high_grade_recall,
        }

    def table(self) -> str:
        lines = [f"{'class':<8} {'cells':>6} {'found':>6} {'recall':>7} {'as abnormal':>12}"]
        for name, h in self.per_class.items():
            recall = f"{h.recall:.2f}" if h.recall is not None else "-"
            lines.append(f"{name:<8} {h.total:>6} {h.found:>6} {recall:>7} {h.found_abnormal:>12}")
        ar = f"{self.abnormal_recall:.2f}" if self.abnormal_recall is not None else "-"
        nf = f"{self.nilm_flagged_fraction:.2f}" if self.nilm_flagged_fraction is not None else "-"
        hg = f"{self.high_grade_recall:.2f}" if self.high_grade_recall is not None else "-"
        lines.append(f"abnormal recall {ar} ({self.abnormal_found}/{self.abnormal_total}); "
                     f"NILM flagged abnormal {nf} ({self.nilm_flagged}/{self.nilm_total}); "
                     f"high grade as high grade {hg} ({self.high_grade_found}/{self.high_grade_total})")
        return "\n".join(lines)


def _contains(boxes: np.ndarray, x: float, y: float) -> np.ndarray:
    return (boxes[:, 0] <= x) & (x <= boxes[:, 2]) & (boxes[:, 1] <= y) & (y <= boxes[:, 3])


def nucleus_hits(boxes: np.ndarray, labels: np.ndarray, scores: np.ndarray, thresholds: list[float],
                 taxonomy: Taxonomy, truth: list[TruthCell]) -> NucleusHitResult:
    """Count truth cells found by counted detections (see the module docstring)."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    labels = np.asarray(labels, np.int64)
    counted = counted_mask(scores, labels, thresholds)
    abnormal_idx = {taxonomy.index(n) for n in taxonomy.abnormal_names()}
    is_abnormal = np.isin(labels, list(abnormal_idx)) & counted
    high_idx = [taxonomy.index(n) for n in HIGH_GRADE_CLASSES if n in taxonomy.names]
    is_high = np.isin(labels, high_idx) & counted
    result = NucleusHitResult()
    for cell in truth:
        hits = result.per_class.setdefault(cell.class_name, ClassHits())
        inside = _contains(boxes, cell.x, cell.y)
        same = bool((inside & counted & (labels == taxonomy.index(cell.class_name))).any())
        any_abnormal = bool((inside & is_abnormal).any())
        hits.total += 1
        hits.found += same
        hits.found_abnormal += any_abnormal
        if taxonomy.index(cell.class_name) in abnormal_idx:
            result.abnormal_total += 1
            result.abnormal_found += any_abnormal
        if cell.class_name in HIGH_GRADE_CLASSES:
            result.high_grade_total += 1
            result.high_grade_found += bool((inside & is_high).any())
        elif cell.class_name == taxonomy.names[0]:
            result.nilm_total += 1
            result.nilm_flagged += any_abnormal
    return result


@dataclass
class CircleRanking:
    top_in_circle: bool | None  # None: no abnormal detection at all
    top_score: float | None
    counted_abnormal: int
    counted_abnormal_outside: int
    best_circle_rank: int | None = None  # 1-based rank of the most suspicious detection in a circle; None: none


def circle_ranking(boxes: np.ndarray, class_scores: np.ndarray, labels: np.ndarray, scores: np.ndarray,
                   thresholds: list[float], taxonomy: Taxonomy, circles: list[tuple[float, float, float, float]]) -> CircleRanking:
    """Is the most suspicious detection's centre inside a circled box; counted abnormal calls outside circles;
    the rank of the most suspicious detection in a circle (1 = the top one; a graded measure where top-1 is 0/N).

    Example:
        >>> import numpy as np
        >>> from wsi_pipeline.taxonomy import load_taxonomy
        >>> tax = load_taxonomy()
        >>> cs = np.zeros((2, len(tax.names)), np.float32); cs[0, tax.index("HSIL")] = 0.8; cs[1, tax.index("LSIL")] = 0.6
        >>> boxes = np.array([[0, 0, 10, 10], [100, 100, 120, 120]], np.float32)
        >>> r = circle_ranking(boxes, cs, cs.argmax(1), cs.max(1), [0.5] * len(tax.names), tax, [(90, 90, 130, 130)])
        >>> r.top_in_circle, r.counted_abnormal, r.counted_abnormal_outside, r.best_circle_rank
        (False, 2, 1, 2)
    """
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    abnormal = [taxonomy.index(n) for n in taxonomy.abnormal_names()]
    labels = np.asarray(labels, np.int64)
    centres = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], 1) if len(boxes) else np.zeros((0, 2))

    in_circle = np.zeros(len(boxes), bool)
    for x0, y0, x1, y1 in circles:
        in_circle |= (x0 <= centres[:, 0]) & (centres[:, 0] <= x1) & (y0 <= centres[:, 1]) & (centres[:, 1] <= y1)
    counted = counted_mask(scores, labels, thresholds) & np.isin(labels, abnormal)
    if not len(boxes):
        return CircleRanking(None, None, 0, 0)
    suspicion = np.asarray(class_scores, np.float32)[:, abnormal].max(1)
    ranked = in_circle[np.argsort(-suspicion, kind="stable")]
    top = int(suspicion.argmax())
    return CircleRanking(bool(in_circle[top]), float(suspicion[top]), int(counted.sum()), int((counted & ~in_circle).sum()),
                         int(ranked.argmax()) + 1 if ranked.any() else None)


def truth_from_annotations(annotations) -> list[TruthCell]:
    """Centres of :class:`~wsi_pipeline.datasets.annotations.Annotation` boxes."""
    return [TruthCell((a.box[0] + a.box[2]) / 2, (a.box[1] + a.box[3]) / 2, a.class_name) for a in annotations]


@dataclass(frozen=True)
class ThresholdChoice:
    """A class's report threshold chosen on annotated tuning cells (:func:`calibrate_thresholds`)."""

    class_name: str
    threshold: float
    cells: int  # annotated cells of the class
    recall: float  # found at this threshold (same class, as the report counts)
    reachable: bool  # False: fewer than the target are covered by a detection of the class at any score


def best_same_class_scores(boxes: np.ndarray, labels: np.ndarray, scores: np.ndarray, taxonomy: Taxonomy,
                           truth: list[TruthCell], classes: list[str]) -> dict[str, list[float]]:
    """Per class of ``classes``: for each truth cell of it, the highest score of a detection labelled with
    that class containing its centre (0 when none does). A cell is found at threshold ``t`` exactly when
    this is ``>= t``, the rule of :func:`nucleus_hits` and of the report's counts."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    labels = np.asarray(labels, np.int64)
    scores = np.asarray(scores, np.float32)
    out: dict[str, list[float]] = {c: [] for c in classes}
    for cell in truth:
        if cell.class_name not in out:
            continue
        same = _contains(boxes, cell.x, cell.y) & (labels == taxonomy.index(cell.class_name))
        out[cell.class_name].append(float(scores[same].max()) if same.any() else 0.0)
    return out


def pooled_cell_scores(fields, taxonomy: Taxonomy) -> dict[str, list[float]]:
    """:func:`best_same_class_scores` of every abnormal class, pooled over ``fields``: ``(detections, truth
    cells)`` pairs, the detections with ``boxes``, ``labels`` and ``scores`` (a ``Detections`` table)."""
    pooled: dict[str, list[float]] = {c: [] for c in taxonomy.abnormal_names()}
    for det, truth in fields:
        for name, values in best_same_class_scores(det.boxes, det.labels, det.scores, taxonomy, truth,
                                                   taxonomy.abnormal_names()).items():
            pooled[name] += values
    return pooled


def calibrate_thresholds(cell_scores: dict[str, list[float]], target_recall: float) -> list[ThresholdChoice]:
    """The highest report threshold per class at which at least ``target_recall`` of its annotated cells
    are found, from :func:`best_same_class_scores` pooled over tuning fields. A class whose covered cells
    fall short of the target gets the threshold that finds all of them (``reachable`` False). Thresholds
    are rounded down to 3 decimals, so the recall holds. Classes without cells are left out.

    Example:
        >>> [c.threshold for c in calibrate_thresholds({"LSIL": [0.9, 0.7, 0.4, 0.2]}, 0.75)]
        [0.4]
        >>> c = calibrate_thresholds({"HSIL": [0.8, 0.0]}, 0.9)[0]
        >>> c.threshold, c.recall, c.reachable
        (0.8, 0.5, False)
    """
    if not 0 < target_recall <= 1:
        raise ValueError(f"target recall must be in (0, 1], got {target_recall}")
    choices = []
    for name, values in cell_scores.items():
        if not values:
            continue
        ranked = np.sort(np.asarray(values, np.float64))[::-1]
        need = int(np.ceil(target_recall * len(ranked) - 1e-9))
        covered = int((ranked > 0).sum())
        reachable = covered >= need
        pick = ranked[need - 1] if reachable else ranked[covered - 1] if covered else 1.0
        threshold = float(np.floor(pick * 1000) / 1000)
        found = (ranked >= threshold) & (ranked > 0)
        choices.append(ThresholdChoice(name, threshold, len(ranked), float(found.mean()), reachable))
    return choices


def calibrated_thresholds(fields, target_recall: float, thresholds: list[float],
                          taxonomy: Taxonomy) -> tuple[list[float], list[ThresholdChoice]]:
    """``thresholds`` (taxonomy order) with each abnormal class that has annotated cells in ``fields`` replaced
    by its :func:`calibrate_thresholds` value, and the choices; ``fields`` as for :func:`pooled_cell_scores`.

    Example:
        >>> from wsi_pipeline.store.detections import Detections
        >>> from wsi_pipeline.taxonomy import load_taxonomy
        >>> tax = load_taxonomy()
        >>> det = Detections(np.array([[0, 0, 20, 20]], np.float32), np.array([0.3], np.float32),
        ...                  np.array([tax.index("HSIL")]), np.zeros(1, np.int32), np.zeros((1, len(tax)), np.float32))
        >>> updated, choices = calibrated_thresholds([(det, [TruthCell(10, 10, "HSIL")])], 1.0, [0.5] * len(tax), tax)
        >>> updated[tax.index("HSIL")], updated[tax.index("LSIL")], [c.class_name for c in choices]
        (0.3, 0.5, ['HSIL'])
    """
    choices = calibrate_thresholds(pooled_cell_scores(fields, taxonomy), target_recall)
    updated = list(thresholds)
    for c in choices:
        updated[taxonomy.index(c.class_name)] = c.threshold
    return updated, choices
