"""Hard negatives: patches of a model's most suspicious cells on slides known to hold no abnormal cell.

A slide a lab signed out as NILM is annotated by its diagnosis: whatever a model calls abnormal on it
is a false positive, and the model's own top calls there are the negatives it most needs to see
(a neutrophil cluster it takes for AGC, a pyknotic nucleus it takes for HSIL). No cell has to be drawn.

:func:`mine_negatives` reads finished ``wsi-run`` slide folders of such slides, ranks their detections
by their highest abnormal-class score (whatever the report threshold), cuts a patch at the model's
resolution around each of the top ``top`` (at most one per patch-sized neighbourhood) and writes a
COCO set with no boxes::

    images/<slide>_x<X>_y<Y>.jpg   patches at target_mpp (X, Y: level-0 origin), the call at the centre
    annotations.json               COCO, no annotations; ``info.annotated_classes`` = the abnormal classes;
                                   each image records the call it was cut for (class, score); written last

Trained with annotated data (``wsi train CONFIG --data data/lab --data data/lab_negatives``), these
patches teach "no abnormal cell here" and nothing about normal cells or organisms, which a NILM slide
holds unlabelled: ``annotated_classes`` makes the loss ignore the other classes on them
(docs/training.md, "Annotations that cover some classes").
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ArtifactError, ConfigError
from ..export.document import ReportDocument
from ..fsutil import atomic_write
from ..io import open_slide
from ..progress import progress_bar
from ..resolution import level0_extent
from ..store.artifacts import REPORT_NAME
from ..store.detections import read_detections
from ..taxonomy import Taxonomy, load_taxonomy
from .annotations import categories
from .config import label_aliases
from .layout import coco_box, start_patch_set, write_patch

log = logging.getLogger(__name__)

DESCRIPTION = "wsi_pipeline hard negatives: top abnormal calls on slides signed out NILM"
ANNOTATED_DESCRIPTION = "wsi_pipeline hard negatives: confident calls far from every annotated cell"


@dataclass
class NegativeSetSummary:
    out_dir: Path
    annotations_path: Path
    n_images: int
    per_slide: dict[str, int]  # patches cut per slide

    def table(self) -> str:
        lines = [f"{'slide':<32} {'patches':>7}"] + [f"{k:<32} {v:>7}" for k, v in self.per_slide.items()]
        lines.append(f"{'total':<32} {self.n_images:>7}")
        return "\n".join(lines)


@dataclass(frozen=True)
class SuspiciousCall:
    x: float  # level-0 centre
    y: float
    class_name: str
    score: float


def slide_folders(paths: list[str | Path]) -> list[Path]:
    """Finished ``wsi-run`` slide folders: each path is one (it holds ``report.json``) or a batch output
    folder whose sub-folders are, sorted by name.

    Example:
        >>> slide_folders(["results/nilm"])  # doctest: +SKIP
        [PosixPath('results/nilm/slide_a'), PosixPath('results/nilm/slide_b')]
    """
    found: list[Path] = []
    for path in map(Path, paths):
        if (path / REPORT_NAME).is_file():
            found.append(path)
        elif path.is_dir():
            inner = sorted(p.parent for p in path.glob(f"*/{REPORT_NAME}"))
            if not inner:
                raise ArtifactError(path, "no finished slide folder here (no report.json in it or its sub-folders)")
            found += inner
        else:
            raise ArtifactError(path, "folder not found")
    return found


def top_abnormal_calls(folder: Path, taxonomy_abnormal: list[str], top: int, separation: float,
                       min_score: float = 0.0) -> list[SuspiciousCall]:
    """The ``top`` detections of ``folder/detections.parquet`` with the highest abnormal-class score, at
    least ``separation`` level-0 px apart (a greedy pass down the ranking), each with its best abnormal
    class. Detections whose best abnormal score is not above ``min_score`` are left out.

    Example:
        >>> calls = top_abnormal_calls(Path("results/nilm/slide_a"), ["ASC-US", "HSIL"], 5, 512)  # doctest: +SKIP
        >>> calls[0].class_name, round(calls[0].score, 2)  # doctest: +SKIP
        ('AGC', 0.64)
    """
    det = read_detections(folder / "detections.parquet")
    names = det.meta.taxonomy
    columns = [names.index(n) for n in taxonomy_abnormal if n in names]
    if not columns or len(det) == 0:
        return []
    return ranked_calls(det.boxes, det.class_scores[:, columns], [names[c] for c in columns], top, separation, min_score)


def ranked_calls(boxes: np.ndarray, abnormal_scores: np.ndarray, abnormal_names: list[str], top: int,
                 separation: float, min_score: float = 0.0, keep: np.ndarray | None = None) -> list[SuspiciousCall]:
    """Greedy pass down the ranking of the best abnormal score: at most ``top`` calls, ``separation``
    px apart, scores above ``min_score``, only where ``keep`` (a boolean mask) allows."""
    best = abnormal_scores.max(axis=1)
    best_class = abnormal_scores.argmax(axis=1)
    centres = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)
    calls: list[SuspiciousCall] = []
    for i in np.argsort(-best, kind="stable"):
        if best[i] <= min_score or len(calls) == top:
            break
        if keep is not None and not keep[i]:
            continue
        if any(abs(c.x - centres[i, 0]) < separation and abs(c.y - centres[i, 1]) < separation for c in calls):
            continue
        calls.append(SuspiciousCall(float(centres[i, 0]), float(centres[i, 1]), abnormal_names[best_class[i]], float(best[i])))
    return calls


def mine_negatives(
    results: list[str | Path],
    out_dir: str | Path,
    top: int = 100,
    target_mpp: float | None = None,
    patch_size: int | None = None,
    min_score: float = 0.0,
    taxonomy: Taxonomy | None = None,
    jpeg_quality: int = 92,
    progress: bool = True,
) -> NegativeSetSummary:
    """Cut the hard-negative set of slides signed out as NILM from their ``wsi-run`` folders (``results``).

    ``target_mpp`` and ``patch_size`` default to those of the model that made the detections (the
    report's ``model`` section). Each slide is read from the path its report records.

    Example:
        >>> s = mine_negatives(["results/nilm"], "data/lab_negatives", top=200)  # doctest: +SKIP
        >>> print(s.table())  # doctest: +SKIP
    """
    if top < 1:
        raise ConfigError(None, f"top must be >= 1, got {top}")
    taxonomy = taxonomy or load_taxonomy()
    folders = slide_folders(results)
    out = Path(out_dir)
    images_dir, marker = start_patch_set(out, DESCRIPTION)
    images, sources, per_slide = [], [], {}
    geometry: tuple[float, int] | None = None
    for folder in folders:
        report = ReportDocument.read(folder / REPORT_NAME)
        model_mpp, model_size = report.model_geometry
        mpp = float(target_mpp or model_mpp)
        size = int(patch_size or model_size)
        if mpp <= 0 or size <= 0:
            raise ArtifactError(folder / REPORT_NAME, "no model target_mpp / patch_size recorded; give --target-mpp and --patch-size")
        if geometry is not None and geometry != (mpp, size):
            raise ConfigError(None, f"{folder.name}: made at {mpp} um/px, {size} px, but earlier slides at "
                                    f"{geometry[0]} um/px, {geometry[1]} px; give --target-mpp and --patch-size")
        geometry = (mpp, size)
        if not report.slide.path or not report.slide.mpp:
            raise ArtifactError(folder / REPORT_NAME, "no slide path or mpp recorded; not a `wsi-run` report")
        slide_path = Path(report.slide.path)
        if not slide_path.is_file():
            raise ArtifactError(slide_path, f"slide of {folder.name} not found (moved since `wsi-run`?)")
        with open_slide(slide_path, mpp=report.slide.mpp_x) as slide:
            extent = max(1, int(round(level0_extent(size, mpp, slide.mpp[0]))))
            calls = top_abnormal_calls(folder, taxonomy.abnormal_names(), top, extent / 2, min_score)
            width, height = slide.dimensions
            for call in progress_bar(calls, desc=f"negatives {slide.name}", unit="patch", disable=not progress):
                x = int(min(max(0, round(call.x - extent / 2)), max(0, width - extent)))
                y = int(min(max(0, round(call.y - extent / 2)), max(0, height - extent)))
                patch = slide.read_at_mpp(x, y, size, mpp)
                name = f"{slide.name}_x{x}_y{y}.jpg"
                write_patch(images_dir, name, patch, jpeg_quality)
                images.append({"id": len(images) + 1, "file_name": name, "width": size, "height": size,
                               "slide": slide.name, "x": x, "y": y, "level0_size": extent, "rare": False,
                               "negative_for": call.class_name, "score": round(call.score, 4)})
            per_slide[slide.name] = len(calls)
            sources.append({"slide": str(slide_path), "result": str(folder), "mpp": slide.mpp[0],
                            "width": width, "height": height, "patches": len(calls)})
    if not images:
        raise ArtifactError(out, f"no detection to cut a negative from in {len(folders)} slide folder(s)"
                                 + (f" with an abnormal score above {min_score}" if min_score > 0 else ""))
    mpp, size = geometry
    coco = {
        "info": {"description": DESCRIPTION,
                 "target_mpp": mpp, "patch_size": size, "taxonomy": taxonomy.names, "images_dir": "images",
                 "source_slides": sources, "top": top, "min_score": min_score, "complete": True,
                 "annotated_classes": taxonomy.abnormal_names()},
        "images": images, "annotations": [], "categories": categories(taxonomy),
    }
    atomic_write(marker, json.dumps(coco) + "\n")
    log.info("Hard negatives %s: %d patches from %d slides", out, len(images), len(folders))
    return NegativeSetSummary(out, marker, len(images), per_slide)


def mine_annotated_negatives(
    model_path: str | Path,
    pairs: list[tuple[str | Path, str | Path]],
    out_dir: str | Path,
    far_um: float = 20.0,
    min_score: float = 0.3,
    top: int = 10,
    slide_mpp: float | dict[str, float] | None = None,
    annotated_classes: list[str] | None = None,
    point_box_um: float = 20.0,
    jpeg_quality: int = 92,
    progress: bool = True,
) -> NegativeSetSummary:
    """Hard negatives from annotated fields: a model's confident abnormal calls farther than ``far_um``
    from every annotated cell, each cut as a patch centred on the call, with the field's annotated
    cells in it as boxes.

    Fields whose annotations mark every cell of ``annotated_classes`` (CRIC marks every squamous cell)
    say that a call far from all of them is not one of those cells: most are neutrophil clusters,
    debris or overlaps. The model runs on each field at its own resolution, on tiles of 4x its
    patch; the top ``top`` such calls per field (above ``min_score``, one per half-patch
    neighbourhood) are kept. The set trains like ``wsi data build``'s, with ``annotated_classes``.

    Example:
        >>> s = mine_annotated_negatives("starter", [("f.jpg", "f.geojson")], "data/negatives", slide_mpp=0.32)  # doctest: +SKIP
        >>> print(s.table())  # doctest: +SKIP
    """
    import shapely  # noqa: PLC0415
    import torch  # noqa: PLC0415
    from scipy.spatial import cKDTree  # noqa: PLC0415

    from ..models.bundled import starter_model_path  # noqa: PLC0415
    from ..models.checkpoint import load_checkpoint  # noqa: PLC0415
    from .annotations import expand_points, field_id, load_annotations  # noqa: PLC0415
    from .slides import patch_boxes  # noqa: PLC0415

    taxonomy = load_taxonomy()
    aliases = label_aliases(taxonomy)
    model = load_checkpoint(starter_model_path() if str(model_path) == "starter" else model_path)
    mpp, size = float(model.meta["target_mpp"]), int(model.meta["patch_size"])
    abnormal = taxonomy.abnormal_names()
    columns = [taxonomy.index(n) for n in abnormal]
    loaded = [load_annotations(a, taxonomy, aliases, image=s, strict=True) for s, a in pairs]
    out = Path(out_dir)
    images_dir, marker = start_patch_set(out, ANNOTATED_DESCRIPTION)
    images, anns_out, sources, per_slide = [], [], [], {}
    for (slide_path, ann_path), annotations in progress_bar(list(zip(pairs, loaded)), desc="fields", unit="field",
                                                            disable=not progress):
        field_mpp = slide_mpp.get(field_id(slide_path)) if isinstance(slide_mpp, dict) else slide_mpp
        with open_slide(slide_path, mpp=field_mpp) as slide:
            scale = mpp / slide.mpp[0]
            extent = max(1, int(round(size * scale)))
            tile = 4 * size  # the detector is fully convolutional: whole fields in a few passes
            width, height = slide.dimensions
            boxes, scores = [], []
            for y0 in range(0, height, int(tile * scale)):
                for x0 in range(0, width, int(tile * scale)):
                    pred = model.detector.predict(torch.from_numpy(slide.read_at_mpp(x0, y0, tile, mpp))[None], 0.05)[0]
                    boxes.append(pred["boxes"].numpy() * scale + [x0, y0, x0, y0])
                    scores.append(pred["class_scores"].numpy()[:, columns])
            boxes, scores = np.concatenate(boxes), np.concatenate(scores)
            points = np.array([[(a.box[0] + a.box[2]) / 2, (a.box[1] + a.box[3]) / 2] for a in annotations]).reshape(-1, 2)
            centres = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1)
            # a KD-tree, not a calls x cells distance matrix: a whole annotated slide holds tens of thousands of each
            nearest = cKDTree(points).query(centres)[0] if len(points) else np.full(len(centres), np.inf)
            far = nearest * slide.mpp[0] > far_um
            calls = ranked_calls(boxes, scores, abnormal, top, extent / 2, min_score, keep=far)
            cells = expand_points(annotations, slide.mpp[0], point_box_um)
            tree = shapely.STRtree([shapely.box(*a.box) for a in cells])
            for call in calls:
                x = int(min(max(0, round(call.x - extent / 2)), max(0, width - extent)))
                y = int(min(max(0, round(call.y - extent / 2)), max(0, height - extent)))
                name = f"{slide.name}_x{x}_y{y}.jpg"
                write_patch(images_dir, name, slide.read_at_mpp(x, y, size, mpp), jpeg_quality)
                image_id = len(images) + 1
                images.append({"id": image_id, "file_name": name, "width": size, "height": size, "slide": slide.name,
                               "x": x, "y": y, "level0_size": extent, "rare": False,
                               "negative_for": call.class_name, "score": round(call.score, 4),
                               "call_x": round(call.x, 1), "call_y": round(call.y, 1)})
                near = [cells[i] for i in np.sort(tree.query(shapely.box(x, y, x + extent, y + extent)))]
                for box, cls in patch_boxes(near, x, y, extent, scale, 0.5, 6):
                    anns_out.append(coco_box(len(anns_out) + 1, image_id, taxonomy.index(cls) + 1, box))
            per_slide[slide.name] = len(calls)
            sources.append({"slide": str(slide_path), "annotations": str(ann_path), "mpp": slide.mpp[0],
                            "width": width, "height": height, "patches": len(calls)})
    if not images:
        raise ArtifactError(out, f"no call above {min_score} farther than {far_um} um from every annotated cell "
                                 f"in {len(pairs)} field(s)")
    coco = {
        "info": {"description": ANNOTATED_DESCRIPTION, "target_mpp": mpp, "patch_size": size, "taxonomy": taxonomy.names,
                 "images_dir": "images", "source_slides": sources, "top": top, "min_score": min_score, "far_um": far_um,
                 "model": str(model_path), "point_box_um": point_box_um, "complete": True,
                 "annotated_classes": annotated_classes or taxonomy.names},
        "images": images, "annotations": anns_out, "categories": categories(taxonomy),
    }
    atomic_write(marker, json.dumps(coco) + "\n")
    log.info("Hard negatives %s: %d patches from %d fields", out, len(images), len(pairs))
    return NegativeSetSummary(out, marker, len(images), per_slide)
