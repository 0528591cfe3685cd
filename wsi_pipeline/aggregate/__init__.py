"""Slide-level aggregation of a detections table (counts, category, suspicion score, adequacy)."""

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
