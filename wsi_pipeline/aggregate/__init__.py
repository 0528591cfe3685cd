"""Slide-level aggregation of a detections table (counts, category, suspicion score, adequacy; the counted-cell
rule in ``counting.py``) and cell-level evaluation against annotated cells (``cell_hits.py``)."""

from .summary import (
    ADEQUACY_NOTE,
    SUSPICION_FORMULA,
    Adequacy,
    Category,
    ClassSummary,
    SlideSummary,
    TopCell,
    class_thresholds,
    summarize,
    suspicion_score,
)

__all__ = [
    "ADEQUACY_NOTE", "SUSPICION_FORMULA", "Adequacy", "Category", "ClassSummary", "SlideSummary", "TopCell",
    "class_thresholds", "summarize", "suspicion_score",
]
