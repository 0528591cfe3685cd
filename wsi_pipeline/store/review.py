"""The review decisions file, ``review.geojson``: a reviewer's verdict on each flagged cell of one slide.

Written by ``wsi report`` / ``wsi-run`` next to ``review.html`` with every flagged cell ``pending``, saved by
the page with the decisions, read back by ``wsi report`` (review counts in the report) and by
``wsi data build`` (confirmed and corrected cells as boxes, rejected calls as hard negatives). The
format is documented in docs/review.md; in short, a QuPath-style FeatureCollection::

    {"type": "FeatureCollection", "schema": "wsi_pipeline.review", "version": 1,
     "slide": {"name": "slide", "fingerprint": "<sha256 of the slide, as in report.json>"},
     "features": [{"type": "Feature", "id": "cell-3",
                   "geometry": {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], ...]]},   # level-0 px
                   "properties": {"objectType": "annotation",
                                  "classification": {"name": "HSIL", "color": [244, 67, 54]},
                                  "review": "pending|confirmed|corrected|rejected", "rejected_as": null,
                                  "model_class": "HSIL", "model_score": 0.95, "counted": true,
                                  "suspect_class": "HSIL", "suspect_score": 0.95, "row": 12,
                                  "reviewer": null, "timestamp": null,
                                  "measurements": {"Model score": 0.95, "Nucleus: Area µm^2": 61.2, ...}}}]}

``classification.name`` is the reviewer's class: the model's while pending or confirmed, the reviewer's
when corrected, and ``Rejected`` when rejected (the reason in ``rejected_as``). A file of another slide
(another fingerprint) is refused in one line wherever it is read.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import ArtifactError
from ..fsutil import atomic_write

REVIEW_SCHEMA = "wsi_pipeline.review"
REVIEW_VERSION = 1
STATES = ("pending", "confirmed", "corrected", "rejected")
DECIDED = ("confirmed", "corrected", "rejected")
REJECTED_CLASS = "Rejected"
REJECTED_COLOR = [120, 120, 120]
# reasons offered by the page; any other short text is accepted in a file
REJECT_REASONS = ("neutrophils", "debris", "normal", "artefact", "other")


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def box_key(box: Iterable[float]) -> tuple[int, int, int, int]:
    """The identity of a flagged cell across reruns of the report: its level-0 box in tenths of a pixel (the
    precision stored in the file; the page uses the same key).

    Example:
        >>> box_key([10.4, 20.6, 30.0, 40.49])
        (104, 206, 300, 405)
    """
    return tuple(int(round(round(float(v), 1) * 10)) for v in box)  # type: ignore[return-value]


def feature_box(feature: dict[str, Any]) -> tuple[float, float, float, float]:
    """Level-0 bounds ``(x0, y0, x1, y1)`` of a feature's Polygon (or Point) geometry."""
    geometry = feature.get("geometry") or {}
    coords = geometry.get("coordinates")
    if geometry.get("type") == "Point":
        x, y = (float(v) for v in coords)
        return x, y, x, y
    if geometry.get("type") != "Polygon" or not coords or not coords[0]:
        raise ValueError("not a Polygon or Point")
    xs = [float(p[0]) for p in coords[0]]
    ys = [float(p[1]) for p in coords[0]]
    return min(xs), min(ys), max(xs), max(ys)


def cell_feature(cell_id: str, box: Iterable[float], model_class: str, model_score: float, color: list[int],
                 counted: bool, suspect_class: str, suspect_score: float, row: int | None,
                 nucleus: dict[str, Any] | None = None, measurements: dict[str, float] | None = None) -> dict[str, Any]:
    """A pending feature for one flagged cell (level-0 box); ``measurements`` (numbers only) is what QuPath shows in
    its measurement table."""
    x0, y0, x1, y1 = (round(float(v), 1) for v in box)
    properties: dict[str, Any] = {
        "objectType": "annotation",
        "classification": {"name": model_class, "color": list(color)},
        "review": "pending", "rejected_as": None,
        "model_class": model_class, "model_score": round(float(model_score), 4), "counted": bool(counted),
        "suspect_class": suspect_class, "suspect_score": round(float(suspect_score), 4),
        "row": row, "reviewer": None, "timestamp": None,
    }
    if nucleus is not None:
        properties["nucleus"] = nucleus
    if measurements:
        properties["measurements"] = measurements
    return {"type": "Feature", "id": cell_id,
            "geometry": {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]},
            "properties": properties}


def new_document(slide_name: str, fingerprint: str, features: list[dict[str, Any]],
                 extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """A decisions document with every cell as given (pending when written by the report)."""
    return {"type": "FeatureCollection", "schema": REVIEW_SCHEMA, "version": REVIEW_VERSION,
            "slide": {"name": slide_name, "fingerprint": fingerprint}, "created_utc": utc_now(),
            **(extra or {}), "features": features}


def is_review_document(data: Any) -> bool:
    """True for a decisions file (``schema`` is ours, or its features carry ``properties.review``)."""
    if not isinstance(data, dict):
        return False
    if data.get("schema") == REVIEW_SCHEMA:
        return True
    features = data.get("features")
    return (isinstance(features, list) and bool(features)
            and all(isinstance((f or {}).get("properties"), dict) and "review" in f["properties"] for f in features))


def looks_like_review_file(path: str | Path) -> bool:
    """Whether ``path`` is a decisions file (cheap: reads JSON files only)."""
    path = Path(path)
    if path.suffix.lower() not in (".geojson", ".json"):
        return False
    try:
        return is_review_document(json.loads(path.read_text()))
    except (OSError, ValueError, UnicodeDecodeError):
        return False


def validate(data: Any, source: str | Path) -> dict[str, Any]:
    """``data`` if it is a valid decisions document, else a one-line :class:`ArtifactError` naming ``source``."""
    if not isinstance(data, dict) or data.get("type") != "FeatureCollection" or not isinstance(data.get("features"), list):
        raise ArtifactError(source, "not a review decisions file (expected a GeoJSON FeatureCollection)")
    if data.get("schema", REVIEW_SCHEMA) != REVIEW_SCHEMA:
        raise ArtifactError(source, f"schema {data.get('schema')!r} is not {REVIEW_SCHEMA}")
    if int(data.get("version", REVIEW_VERSION)) > REVIEW_VERSION:
        raise ArtifactError(source, f"review file version {data.get('version')} is newer than this software reads "
                                    f"({REVIEW_VERSION})")
    slide = data.get("slide")
    if not isinstance(slide, dict) or not slide.get("fingerprint"):
        raise ArtifactError(source, "review file names no slide (\"slide\": {\"name\", \"fingerprint\"} missing)")
    for i, f in enumerate(data["features"]):
        props = (f or {}).get("properties") if isinstance(f, dict) else None
        if not isinstance(props, dict):
            raise ArtifactError(source, f"feature {i} has no properties")
        state = props.get("review")
        if state not in STATES:
            raise ArtifactError(source, f"feature {i}: review {state!r} is not one of {', '.join(STATES)}")
        try:
            feature_box(f)
        except (TypeError, ValueError, IndexError):
            raise ArtifactError(source, f"feature {i} has no valid Polygon geometry") from None
        name = (props.get("classification") or {}).get("name") if isinstance(props.get("classification"), dict) else None
        if state in ("confirmed", "corrected") and not name:
            raise ArtifactError(source, f"feature {i} is {state} but has no classification.name")
        if state == "rejected" and not props.get("rejected_as"):
            raise ArtifactError(source, f"feature {i} is rejected but gives no rejected_as reason")
    return data


def read_review(path: str | Path, fingerprint: str | None = None, slide_name: str = "") -> dict[str, Any]:
    """Read and check a decisions file; with ``fingerprint``, refuse a file of another slide in one line."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ArtifactError(path, "review file not found") from None
    except (ValueError, UnicodeDecodeError):
        raise ArtifactError(path, "not valid JSON (expected a review.geojson decisions file)") from None
    validate(data, path)
    if fingerprint:
        check_slide(data, fingerprint, path, slide_name)
    return data


def check_slide(data: dict[str, Any], fingerprint: str, source: str | Path, slide_name: str = "") -> None:
    """One-line :class:`ArtifactError` when the decisions are for another slide than ``fingerprint``'s."""
    theirs = (data.get("slide") or {})
    if theirs.get("fingerprint") != fingerprint:
        raise ArtifactError(source, f"decisions for slide {theirs.get('name') or '?'} "
                                    f"(fingerprint {str(theirs.get('fingerprint'))[:12]}), not for "
                                    f"{slide_name or 'this slide'} (fingerprint {fingerprint[:12]}); refused")


def counts(data: dict[str, Any]) -> dict[str, int]:
    """Cells per review state (every state listed, 0 when none).

    Example:
        >>> counts({"features": [{"properties": {"review": "confirmed"}}, {"properties": {"review": "pending"}}]})
        {'flagged': 2, 'pending': 1, 'confirmed': 1, 'corrected': 0, 'rejected': 0}
    """
    c = Counter(f["properties"]["review"] for f in data["features"])
    return {"flagged": len(data["features"]), **{s: int(c.get(s, 0)) for s in STATES}}


def is_reviewed(data: dict[str, Any]) -> bool:
    """Any decision made (a file with every cell pending is not a review)."""
    return any(f["properties"]["review"] in DECIDED for f in data["features"])


def summary_block(data: dict[str, Any], file_name: str = "review.geojson") -> dict[str, Any]:
    """The ``review`` section of report.json for a reviewed slide: counts, reviewers, last decision, and
    per model call the reviewed classes."""
    decided = [f["properties"] for f in data["features"] if f["properties"]["review"] in DECIDED]
    by_call: dict[str, Counter] = {}
    for p in decided:
        verdict = f"rejected: {p.get('rejected_as')}" if p["review"] == "rejected" else p["classification"]["name"]
        by_call.setdefault(str(p.get("model_class")), Counter())[verdict] += 1
    stamps = sorted(str(p["timestamp"]) for p in decided if p.get("timestamp"))
    return {
        "status": "complete" if not counts(data)["pending"] else "in_progress",
        "file": file_name,
        **counts(data),
        "reviewers": sorted({str(p["reviewer"]) for p in decided if p.get("reviewer")}),
        "last_decision_utc": stamps[-1] if stamps else None,
        "by_model_call": {k: dict(v.most_common()) for k, v in sorted(by_call.items())},
        "note": "Decisions of a person reviewing the flagged cells; the model's calls, counts and category "
                "above are unchanged.",
    }


def summary_text(block: dict[str, Any] | None) -> str:
    """One line for a batch summary from report.json's ``review`` section ("" for an unreviewed slide).

    Example:
        >>> summary_text({"confirmed": 3, "corrected": 1, "rejected": 2, "pending": 0})
        '3 confirmed, 1 corrected, 2 rejected, 0 pending'
    """
    if not block:
        return ""
    return ", ".join(f"{block.get(k, 0)} {k}" for k in ("confirmed", "corrected", "rejected", "pending"))


def decisions_by_box(data: dict[str, Any]) -> dict[tuple[int, int, int, int], dict[str, Any]]:
    """Decided features keyed by :func:`box_key`."""
    return {box_key(feature_box(f)): f for f in data["features"] if f["properties"]["review"] in DECIDED}


def merge(fresh: dict[str, Any], old: dict[str, Any]) -> dict[str, Any]:
    """``fresh`` (every flagged cell pending) with the decisions of ``old`` carried over, cell by cell (same
    level-0 box); decided cells of ``old`` that are no longer flagged are kept at the end. Never drops a decision."""
    decided = decisions_by_box(old)
    features = []
    for f in fresh["features"]:
        prior = decided.pop(box_key(feature_box(f)), None)
        if prior is not None:
            f = {**f, "properties": {**f["properties"], **{k: prior["properties"].get(k) for k in
                                                          ("classification", "review", "rejected_as", "reviewer",
                                                           "timestamp")}}}
        features.append(f)
    features += list(decided.values())
    return {**fresh, "features": features}


def write_review(path: str | Path, data: dict[str, Any]) -> Path:
    """Write a decisions file atomically (validated first)."""
    validate(data, path)
    return atomic_write(path, json.dumps(data, indent=1, allow_nan=False) + "\n")


__all__ = ["DECIDED", "REJECTED_CLASS", "REJECT_REASONS", "REVIEW_SCHEMA", "REVIEW_VERSION", "STATES", "box_key",
           "cell_feature", "check_slide", "counts", "decisions_by_box", "feature_box", "is_review_document",
           "is_reviewed", "looks_like_review_file", "merge", "new_document", "read_review", "summary_block", "summary_text",
           "validate", "write_review"]
