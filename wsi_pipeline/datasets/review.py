"""Review decisions (``review.geojson``, docs/review.md) as training data, and a simulated reviewer.

* :func:`load_review_labels`: a slide's decisions file -> confirmed and corrected cells as labelled boxes (the
  reviewer's class on the model's box), rejected calls as hard negatives (patches centred on the call, no box
  for it), pending cells ignored. A file of another slide (fingerprint) is refused in one line.
  ``wsi data build --slide S --annotations review.geojson`` uses it through
  :func:`wsi_pipeline.datasets.slides.extract_dataset`.
* :func:`review_pairs`: ``(slide, review.geojson)`` of reviewed ``wsi-run`` folders (a slide folder, or a batch
  folder holding them), for ``wsi data build --folder``.
* :func:`simulate_review`: the decisions a reviewer who answers from annotated nucleus points would make
  (the loop's measurement, issue 25 item 5).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ArtifactError
from ..store import review as decisions
from ..store.artifacts import DETECTIONS_NAME, REVIEW_GEOJSON_NAME
from ..taxonomy import Taxonomy
from .annotations import Annotation, class_mapper

log = logging.getLogger(__name__)

REVIEW_FILE = REVIEW_GEOJSON_NAME
SIMULATED_REVIEWER = "simulated reviewer (annotations)"


@dataclass(frozen=True)
class RejectedCall:
    """A flagged cell the reviewer rejected: level-0 centre, the model's call, why it was rejected."""

    x: float
    y: float
    class_name: str
    score: float
    rejected_as: str


@dataclass
class ReviewLabels:
    """What one decisions file gives training."""

    boxes: list[Annotation]  # confirmed and corrected cells, reviewer's class
    rejected: list[RejectedCall]
    counts: dict[str, int] = field(default_factory=dict)  # cells per review state
    calls: list[tuple[str, float]] = field(default_factory=list)  # the model's call and score of each box

    def negatives_outside(self, annotated: set[str]) -> ReviewLabels:
        """These labels for a set whose annotations mark only ``annotated`` classes: a reviewed cell of another
        class (e.g. "no, NILM") becomes a hard negative for the model's call, not a box. A box of a class that is
        not annotated would teach that class only positives, never background, and it would fire everywhere.
        """
        keep = [i for i, a in enumerate(self.boxes) if a.class_name in annotated]
        moved = [RejectedCall((a.box[0] + a.box[2]) / 2, (a.box[1] + a.box[3]) / 2, call, score, f"reviewed as {a.class_name}")
                 for a, (call, score) in zip(self.boxes, self.calls) if a.class_name not in annotated]
        return ReviewLabels([self.boxes[i] for i in keep], self.rejected + moved,
                            {**self.counts, "reviewed_outside_annotated": len(moved)}, [self.calls[i] for i in keep])


def load_review_labels(path: str | Path, taxonomy: Taxonomy, aliases: dict[str, str] | None = None,
                       fingerprint: str | None = None, slide_name: str = "") -> ReviewLabels:
    """Boxes and hard negatives from a decisions file; with ``fingerprint`` (the slide's), another slide's file
    is a one-line :class:`ArtifactError`. A reviewer's class that is not a taxonomy class (or alias) is refused.

    Example:
        >>> labels = load_review_labels("results/a/review.geojson", load_taxonomy())  # doctest: +SKIP
        >>> labels.counts  # doctest: +SKIP
        {'flagged': 40, 'pending': 5, 'confirmed': 20, 'corrected': 6, 'rejected': 9}
    """
    data = decisions.read_review(path, fingerprint, slide_name)
    if not decisions.is_reviewed(data):
        raise ArtifactError(path, "no decision yet: every flagged cell is pending (review the slide with `wsi review`)")
    to_class = class_mapper(taxonomy, aliases or {})
    boxes, rejected, calls = [], [], []
    for i, f in enumerate(data["features"]):
        p = f["properties"]
        box = decisions.feature_box(f)
        if p["review"] in ("confirmed", "corrected"):
            name = to_class(p["classification"]["name"])
            if name is None:
                raise ArtifactError(path, f"feature {i}: class {p['classification']['name']!r} is not a taxonomy class")
            boxes.append(Annotation(box, name))
            calls.append((str(p.get("model_class") or ""), float(p.get("model_score") or 0.0)))
        elif p["review"] == "rejected":
            rejected.append(RejectedCall((box[0] + box[2]) / 2, (box[1] + box[3]) / 2, str(p.get("model_class") or ""),
                                         float(p.get("model_score") or 0.0), str(p["rejected_as"])))
    return ReviewLabels(boxes, rejected, decisions.counts(data), calls)


def slide_fingerprint(slide_path: str | Path, mpp: float | None = None) -> str:
    """The slide's identity as the pipeline records it (``Slide.fingerprint``)."""
    from ..io import open_slide  # noqa: PLC0415

    with open_slide(slide_path, mpp=mpp) as slide:
        return slide.fingerprint()


def review_pairs(folder: str | Path) -> list[tuple[Path, Path]] | None:
    """``(slide, review.geojson)`` for a reviewed slide folder of ``wsi-run`` or a batch folder holding such
    folders (the slide read from where the detections say it was; folders whose review has no decision yet are
    left out); ``None`` when ``folder`` holds no review.geojson at all (then it is a folder of slides with
    annotation files beside them)."""
    folder = Path(folder)
    files = [folder / REVIEW_FILE] if (folder / REVIEW_FILE).is_file() else sorted(folder.glob(f"*/{REVIEW_FILE}"))
    if not files:
        return None
    reviewed = [f for f in files if decisions.is_reviewed(decisions.read_review(f))]
    if len(reviewed) < len(files):  # wsi-run writes a pending review.geojson for every slide
        log.info("%s: %d of %d slide folders have no decision yet and are left out", folder, len(files) - len(reviewed),
                 len(files))
    if not reviewed:
        raise ArtifactError(folder, f"no reviewed slide here: every {REVIEW_FILE} is all pending (review the slides "
                                    "with `wsi review` first)")
    pairs = []
    for review in reviewed:
        run = review.parent
        if not (run / DETECTIONS_NAME).is_file():
            raise ArtifactError(run, f"has {REVIEW_FILE} but no {DETECTIONS_NAME}: not a `wsi-run` slide folder")
        from ..store.detections import read_detections  # noqa: PLC0415

        info = read_detections(run / DETECTIONS_NAME).meta.slide
        if info is None or not info.path:
            raise ArtifactError(run / DETECTIONS_NAME, "records no slide path; give --slide S --annotations REVIEW")
        if not Path(info.path).is_file():
            raise ArtifactError(info.path, f"slide of {run.name} not found (moved since `wsi-run`?); give --slide "
                                           f"S --annotations {review}")
        pairs.append((Path(info.path), review))
    return pairs


def simulate_review(review: dict[str, Any] | str | Path, truth: list[Annotation], mpp: float, hit_um: float = 10.0,
                    far_um: float = 20.0, rejected_as: str = "not_annotated", reviewer: str = SIMULATED_REVIEWER,
                    timestamp: str | None = None) -> dict[str, Any]:
    """The decisions of a reviewer who answers from annotated nuclei: a flagged cell whose centre lies within
    ``hit_um`` of an annotated nucleus (or whose box holds one; the nearest such nucleus) takes that nucleus's
    class (``confirmed`` when it is the model's call, else ``corrected``); a cell farther than ``far_um`` from
    every annotated nucleus is ``rejected`` as ``rejected_as``; cells in between stay ``pending`` (the
    reviewer would not know). ``truth`` are nucleus points (or boxes: their centres) in the same level-0 pixels,
    ``mpp`` their um/px. Returns a new, valid decisions document (the slide identity kept).

    Example:
        >>> doc = {"type": "FeatureCollection", "slide": {"name": "f", "fingerprint": "ab"}, "features": [
        ...     decisions.cell_feature("cell-1", (90, 90, 110, 110), "HSIL", 0.9, [0, 0, 0], True, "HSIL", 0.9, 1),
        ...     decisions.cell_feature("cell-2", (490, 90, 510, 110), "LSIL", 0.7, [0, 0, 0], True, "LSIL", 0.7, 2),
        ...     decisions.cell_feature("cell-3", (900, 900, 920, 920), "AGC", 0.6, [0, 0, 0], True, "AGC", 0.6, 3)]}
        >>> truth = [Annotation((102, 98, 102, 98), "HSIL"), Annotation((500, 104, 500, 104), "ASC-H")]
        >>> out = simulate_review(doc, truth, mpp=0.5, timestamp="2026-01-01T00:00:00+00:00")
        >>> [(f["properties"]["review"], f["properties"]["classification"]["name"], f["properties"]["rejected_as"])
        ...  for f in out["features"]]
        [('confirmed', 'HSIL', None), ('corrected', 'ASC-H', None), ('rejected', 'Rejected', 'not_annotated')]
    """
    if isinstance(review, (str, Path)):
        review = decisions.read_review(review)
    if not hit_um > 0 or far_um < hit_um:
        raise ValueError(f"need 0 < hit_um <= far_um, got {hit_um}, {far_um}")
    from scipy.spatial import cKDTree  # noqa: PLC0415

    from ..taxonomy import load_taxonomy  # noqa: PLC0415

    colours = {c.name: list(c.rgb) for c in load_taxonomy().classes}
    points = np.array([((a.box[0] + a.box[2]) / 2, (a.box[1] + a.box[3]) / 2) for a in truth], float).reshape(-1, 2)
    tree = cKDTree(points) if len(points) else None
    stamp = timestamp or decisions.utc_now()
    features = []
    for f in review["features"]:
        f = json.loads(json.dumps(f))  # a copy: the input is not changed
        p = f["properties"]
        x0, y0, x1, y1 = decisions.feature_box(f)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        verdict: tuple[str, str | None] | None = None  # (review, class)
        if tree is not None:
            dist, idx = tree.query((cx, cy))
            inside = [i for i in tree.query_ball_point((cx, cy), math.hypot(x1 - x0, y1 - y0) / 2 + 1e-6)
                      if x0 <= points[i, 0] <= x1 and y0 <= points[i, 1] <= y1]
            if dist * mpp <= hit_um or inside:
                k = idx if dist * mpp <= hit_um else min(inside, key=lambda i: math.hypot(points[i, 0] - cx, points[i, 1] - cy))
                name = truth[int(k)].class_name
                verdict = ("confirmed" if name == p.get("model_class") else "corrected", name)
            elif dist * mpp > far_um:
                verdict = ("rejected", None)
        elif truth == []:
            verdict = ("rejected", None)
        if verdict is None:
            p.update(review="pending", rejected_as=None, reviewer=None, timestamp=None)
        elif verdict[0] == "rejected":
            p.update(review="rejected", classification={"name": decisions.REJECTED_CLASS, "color": decisions.REJECTED_COLOR},
                     rejected_as=rejected_as, reviewer=reviewer, timestamp=stamp)
        else:
            p.update(review=verdict[0], classification={"name": verdict[1], "color": colours.get(verdict[1], [0, 0, 0])},
                     rejected_as=None, reviewer=reviewer, timestamp=stamp)
        features.append(f)
    out = {**review, "schema": decisions.REVIEW_SCHEMA, "version": decisions.REVIEW_VERSION, "features": features,
           "simulated": {"hit_um": hit_um, "far_um": far_um, "truth_cells": len(truth)}}
    out.setdefault("type", "FeatureCollection")
    return decisions.validate(out, "simulated review")


def simulate_review_file(review_path: str | Path, truth: list[Annotation], mpp: float, out_path: str | Path | None = None,
                         **options: Any) -> Path:
    """:func:`simulate_review` of a run folder's ``review.geojson``, written to ``out_path`` (default: in place)."""
    doc = simulate_review(review_path, truth, mpp, **options)
    return decisions.write_review(out_path or review_path, doc)


__all__ = ["RejectedCall", "ReviewLabels", "load_review_labels", "review_pairs", "simulate_review",
           "simulate_review_file", "slide_fingerprint"]
