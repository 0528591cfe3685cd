"""Cut a COCO detection dataset of patches from slides with box annotations (synthetic or real).

Layout written to ``out_dir``::

    images/<slide>_x<X>_y<Y>.jpg   patches at target_mpp (X, Y: level-0 origin)
    annotations.json               COCO; categories = taxonomy order, id = index + 1; info has target_mpp,
                                   patch_size, taxonomy, source slides; written last (complete marker)
    class_counts.csv               instances and images per class

Every patch holding a rare-class cell is kept (a rare cell cut by the grid also gets a patch centred on
it); patches with only normal/inflammatory cells are sampled at ``background_ratio`` per rare patch.
Boxes are clipped at patch borders; slivers (less than ``min_visible_fraction`` of the box inside, or
under ``min_box_px``) are dropped.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import shapely

from ..errors import ArtifactError, ConfigError
from ..fsutil import atomic_write
from ..io import open_slide
from ..progress import progress_bar
from ..resolution import level0_extent, level0_scale
from ..taxonomy import Taxonomy, load_taxonomy
from .annotations import Annotation, categories, expand_points, field_id, load_annotations
from .config import DatasetSettings, load_dataset_settings
from .layout import coco_box, start_patch_set, write_patch

log = logging.getLogger(__name__)

DESCRIPTION = "wsi_pipeline patch dataset"


ANNOTATION_SUFFIXES = (".geojson", ".xml", ".json")


def annotated_pairs(folder: str | Path) -> list[tuple[Path, Path]]:
    """``(slide, annotations)`` for every file in ``folder`` with an annotation file of the same stem
    beside it (``a.svs`` + ``a.geojson`` / ``a.xml`` / ``a.json``, or a review ``a.review.geojson``), sorted by
    name; or, for a reviewed ``wsi-run`` slide folder (or a batch folder of them), ``(slide, review.geojson)``
    of each (:func:`~wsi_pipeline.datasets.review.review_pairs`).

    Example:
        >>> annotated_pairs("lab_slides/")  # doctest: +SKIP
        [(PosixPath('lab_slides/a.svs'), PosixPath('lab_slides/a.geojson'))]
    """
    from .review import review_pairs  # noqa: PLC0415

    folder = Path(folder)
    if not folder.is_dir():
        raise ArtifactError(folder, "folder not found")
    reviewed = review_pairs(folder)
    if reviewed is not None:
        return reviewed
    pairs = []
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.suffix.lower() in ANNOTATION_SUFFIXES:
            continue
        ann = next((path.with_suffix(s) for s in (".review.geojson", *ANNOTATION_SUFFIXES) if path.with_suffix(s).is_file()), None)
        if ann is not None:
            pairs.append((path, ann))
    if not pairs:
        raise ArtifactError(folder, f"no slide or image with annotations beside it ({', '.join(ANNOTATION_SUFFIXES)})")
    return pairs


def point_csv_pairs(points_csv: str | Path, images_dir: str | Path | None = None) -> list[tuple[Path, Path]]:
    """``(image, points_csv)`` for every image a point CSV names, looked up in ``images_dir`` (default:
    the CSV's folder); an image named but not there is a one-line error.

    Example:
        >>> point_csv_pairs("../shared/data/cytology/cric_fields/cells.csv")[:1]  # doctest: +SKIP
        [(PosixPath('../shared/data/cytology/cric_fields/008df697b9283d9ad4774096584d2efb.jpg'), PosixPath('...cells.csv'))]
    """
    from .annotations import read_point_rows  # noqa: PLC0415

    points_csv = Path(points_csv)
    folder = Path(images_dir) if images_dir else points_csv.parent
    pairs = []
    for rows in read_point_rows(points_csv).values():
        image = folder / Path(rows[0]["image"]).name
        if not image.is_file():
            raise ArtifactError(points_csv, f"lists image {Path(rows[0]['image']).name}, which is not in {folder}")
        pairs.append((image, points_csv))
    return sorted(pairs)


def read_mpp_table(path: str | Path) -> dict[str, float]:
    """``{image stem: um/px}`` from a CSV with the columns ``image`` and ``mpp`` (or ``mpp_estimate``).

    Example:
        >>> read_mpp_table("../shared/data/cytology/cric_fields/fields.csv")["008df697b9283d9ad4774096584d2efb"]  # doctest: +SKIP
        0.324
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
    except FileNotFoundError:
        raise ArtifactError(path, "pixel-size table not found") from None
    column = next((c for c in ("mpp", "mpp_estimate") if rows and c in rows[0]), None)
    if not rows or "image" not in rows[0] or column is None:
        raise ArtifactError(path, "a pixel-size table needs the columns image and mpp (or mpp_estimate)")
    table = {}
    for i, r in enumerate(rows, start=2):
        try:
            table[field_id(r["image"])] = float(r[column])
        except ValueError:
            raise ArtifactError(path, f"line {i}: {column} {r[column]!r} is not a number") from None
    return table


@dataclass
class DatasetSummary:
    out_dir: Path
    annotations_path: Path
    counts_path: Path
    n_images: int
    n_rare_patches: int
    n_background_patches: int
    class_counts: dict[str, int]
    class_images: dict[str, int] = field(default_factory=dict)
    review: dict[str, int] | None = None  # review files read: cells per state and negative patches cut

    def review_line(self) -> str:
        """What the review files gave, in one line (empty when none was read)."""
        r = self.review
        if not r:
            return ""
        outside = r.get("reviewed_outside_annotated", 0)
        boxes = f" ({outside} of a class the set does not annotate, e.g. NILM: hard negatives instead)" if outside else ""
        return (f"review files: {r['confirmed']} confirmed + {r['corrected']} corrected cells as labelled boxes{boxes}, "
                f"{r['rejected']} rejected calls as hard negatives ({r['negative_patches']} patches), "
                f"{r['pending']} pending ignored")

    def table(self) -> str:
        """Per-class instance table, as printed by ``wsi synth dataset``."""
        lines = [f"{'class':<8} {'instances':>9} {'images':>7}"]
        lines += [f"{k:<8} {v:>9} {self.class_images.get(k, 0):>7}" for k, v in self.class_counts.items()]
        lines.append(f"{'total':<8} {sum(self.class_counts.values()):>9} {self.n_images:>7}")
        return "\n".join(lines)


def patch_boxes(anns: list[Annotation], x: int, y: int, extent: int, scale: float, min_visible: float, min_px: float):
    """Annotations seen in the level-0 square ``(x, y, extent)``, as patch-pixel boxes, clipped; slivers dropped.

    Example:
        >>> a = [Annotation((90, 10, 130, 50), "HSIL"), Annotation((0, 0, 20, 20), "NILM")]
        >>> patch_boxes(a, 0, 0, 100, 2.0, 0.5, 3)   # HSIL is 25% inside: dropped
        [((0.0, 0.0, 10.0, 10.0), 'NILM')]
    """
    out = []
    for a in anns:
        x0, y0, x1, y1 = a.box
        cx0, cy0, cx1, cy1 = max(x0, x), max(y0, y), min(x1, x + extent), min(y1, y + extent)
        if cx1 <= cx0 or cy1 <= cy0:
            continue
        area = max((x1 - x0) * (y1 - y0), 1e-9)
        if (cx1 - cx0) * (cy1 - cy0) < min_visible * area:
            continue
        box = ((cx0 - x) / scale, (cy0 - y) / scale, (cx1 - x) / scale, (cy1 - y) / scale)
        if box[2] - box[0] < min_px or box[3] - box[1] < min_px:
            continue
        out.append((tuple(float(round(v, 2)) for v in box), a.class_name))
    return out


def _grid(size: int, extent: int) -> list[int]:
    if size <= extent:
        return [0]
    starts = list(range(0, size - extent + 1, extent))
    if starts[-1] + extent < size:
        starts.append(size - extent)
    return starts


def extract_dataset(
    slides: list[tuple[str | Path, str | Path]],
    out_dir: str | Path,
    target_mpp: float | None = None,
    patch_size: int | None = None,
    background_ratio: float | None = None,
    seed: int = 0,
    config: DatasetSettings | None = None,
    taxonomy: Taxonomy | None = None,
    slide_mpp: float | dict[str, float] | None = None,
    progress: bool = True,
    annotated_classes: list[str] | None = None,
    point_box_um: float | None = None,
    strict_labels: bool = False,
) -> DatasetSummary:
    """Cut patches and COCO boxes from ``(slide, annotations)`` pairs; unset options come from ``config``
    (default: ``configs/synth.yaml``; a ``SynthConfig`` is one).

    ``slide_mpp``: um/px of slides whose files lack it, one value for all or ``{image stem: mpp}``.
    ``annotated_classes``: the classes the annotations mark on every cell of theirs (default: all).
    Training does not teach the others as background on these patches (docs/training.md,
    "Annotations that cover some classes"). Point annotations become squares of ``point_box_um``
    micrometres (:func:`~wsi_pipeline.datasets.annotations.expand_points`). Every slide and annotation
    file is checked before the first patch is written, so a bad pair leaves nothing behind.

    A review decisions file (``review.geojson``, docs/review.md) gives its confirmed and corrected cells as
    boxes and its rejected calls as hard negatives: a patch centred on each (one per half-patch), no box for
    the call, ``negative_for`` / ``rejected_as`` recorded. It must be the slide's own (same fingerprint).
    A review marks only the cells it flagged, so when every input is a review ``annotated_classes``
    defaults to the abnormal classes (unflagged normal cells are not taught as background).

    Example:
        >>> s = extract_dataset([("slide.svs", "slide.cells.geojson")], "dataset/")  # doctest: +SKIP
        >>> print(s.table())  # doctest: +SKIP
    """
    taxonomy = taxonomy or load_taxonomy()
    unknown = [c for c in annotated_classes or [] if c not in taxonomy.names]
    if unknown:
        raise ConfigError(None, f"annotated classes {', '.join(unknown)} are not in the taxonomy ({', '.join(taxonomy.names)})")
    cfg = config or load_dataset_settings(taxonomy)
    d = cfg.dataset
    target_mpp = target_mpp or d.target_mpp
    patch_size = patch_size or d.patch_size
    background_ratio = d.background_ratio if background_ratio is None else background_ratio
    point_box_um = point_box_um or d.point_box_um
    rare = set(d.rare_classes)
    out = Path(out_dir)
    from ..store.review import looks_like_review_file  # noqa: PLC0415
    from .review import ReviewLabels, load_review_labels, slide_fingerprint  # noqa: PLC0415

    loaded: list = []
    review_counts = dict.fromkeys(("flagged", "pending", "confirmed", "corrected", "rejected", "negative_patches",
                                   "reviewed_outside_annotated"), 0)
    n_reviews = 0
    for slide_path, ann_path in slides:  # every input checked before anything is written
        if not Path(slide_path).is_file():
            raise ArtifactError(slide_path, f"image or slide not found (named by {Path(ann_path).name})")
        if looks_like_review_file(ann_path):
            mpp = slide_mpp.get(field_id(slide_path)) if isinstance(slide_mpp, dict) else slide_mpp
            loaded.append(load_review_labels(ann_path, taxonomy, cfg.label_aliases, slide_fingerprint(slide_path, mpp),
                                             Path(slide_path).name))
            n_reviews += 1
        else:
            loaded.append(load_annotations(ann_path, taxonomy, cfg.label_aliases, image=slide_path, strict=strict_labels))
    if n_reviews and n_reviews == len(slides) and annotated_classes is None:
        annotated_classes = taxonomy.abnormal_names()
        log.info("review files mark only the cells they flagged: annotated classes = the abnormal ones")
    rejected_calls: list[list] = []  # per input: the reviewer's rejected calls (hard negatives)
    for i, labels in enumerate(loaded):
        if not isinstance(labels, ReviewLabels):
            rejected_calls.append([])
            continue
        if annotated_classes is not None:
            labels = labels.negatives_outside(set(annotated_classes))
        for k, v in labels.counts.items():
            review_counts[k] = review_counts.get(k, 0) + v
        loaded[i] = labels.boxes
        rejected_calls.append(labels.rejected)
    images_dir, marker = start_patch_set(out, DESCRIPTION)
    rng = np.random.default_rng(seed)
    images, anns_out, sources = [], [], []
    n_rare = n_bg = 0
    for (slide_path, ann_path), annotations, rejected in zip(slides, loaded, rejected_calls):
        mpp = slide_mpp.get(field_id(slide_path)) if isinstance(slide_mpp, dict) else slide_mpp
        with open_slide(slide_path, mpp=mpp) as slide:
            annotations = expand_points(annotations, slide.mpp[0], point_box_um)
            width, height = slide.dimensions
            inside = [a for a in annotations if a.box[0] < width and a.box[1] < height and a.box[2] > 0 and a.box[3] > 0]
            if len(inside) < len(annotations):
                log.warning("%s: %d annotations lie outside the slide and are ignored", Path(ann_path).name, len(annotations) - len(inside))
            if not inside and not rejected:
                raise ArtifactError(ann_path, f"no annotations inside the slide {Path(slide_path).name} ({width}x{height})")
            scale = level0_scale(target_mpp, slide.mpp[0])
            extent = max(1, int(round(level0_extent(patch_size, target_mpp, slide.mpp[0]))))
            tree = shapely.STRtree([shapely.box(*a.box) for a in inside])

            def near(x: int, y: int) -> list[Annotation]:
                return [inside[i] for i in np.sort(tree.query(shapely.box(x, y, x + extent, y + extent)))]

            rare_origins, bg_pool = _choose_patches(inside, near, width, height, extent, scale, rare, d)
            n_take = int(round(background_ratio * max(len(rare_origins), 1)))
            picks = rng.permutation(len(bg_pool))[: min(n_take, len(bg_pool))]
            origins = [(o, True) for o in rare_origins] + [(bg_pool[i], False) for i in sorted(picks)]
            for (x, y), is_rare in progress_bar(origins, desc=f"patches {slide.name}", unit="patch", disable=not progress):
                patch = slide.read_at_mpp(x, y, patch_size, target_mpp)
                name = f"{slide.name}_x{x}_y{y}.jpg"
                write_patch(images_dir, name, patch, d.jpeg_quality)
                image_id = len(images) + 1
                images.append({"id": image_id, "file_name": name, "width": patch_size, "height": patch_size,
                               "slide": slide.name, "x": x, "y": y, "level0_size": extent, "rare": is_rare})
                for box, cls in patch_boxes(near(x, y), x, y, extent, scale, d.min_visible_fraction, d.min_box_px):
                    anns_out.append(coco_box(len(anns_out) + 1, image_id, taxonomy.index(cls) + 1, box))
            n_rare += len(rare_origins)
            n_bg += len(picks)
            n_negative = 0
            for call in _separated(rejected, extent / 2):  # the reviewer's rejected calls: hard negatives
                x = int(min(max(0, round(call.x - extent / 2)), max(0, width - extent)))
                y = int(min(max(0, round(call.y - extent / 2)), max(0, height - extent)))
                name = f"{slide.name}_x{x}_y{y}_rejected.jpg"
                write_patch(images_dir, name, slide.read_at_mpp(x, y, patch_size, target_mpp), d.jpeg_quality)
                image_id = len(images) + 1
                images.append({"id": image_id, "file_name": name, "width": patch_size, "height": patch_size,
                               "slide": slide.name, "x": x, "y": y, "level0_size": extent, "rare": False,
                               "negative_for": call.class_name, "score": round(call.score, 4),
                               "rejected_as": call.rejected_as, "call_x": round(call.x, 1), "call_y": round(call.y, 1)})
                for box, cls in patch_boxes(near(x, y), x, y, extent, scale, d.min_visible_fraction, d.min_box_px):
                    anns_out.append(coco_box(len(anns_out) + 1, image_id, taxonomy.index(cls) + 1, box))
                n_negative += 1
            review_counts["negative_patches"] += n_negative
            sources.append({"slide": str(slide_path), "annotations": str(ann_path), "mpp": slide.mpp[0],
                            "width": width, "height": height, "patches": len(origins) + n_negative})
    counts = dict.fromkeys(taxonomy.names, 0)
    seen: dict[str, set[int]] = {n: set() for n in taxonomy.names}
    for a in anns_out:
        name = taxonomy.names[a["category_id"] - 1]
        counts[name] += 1
        seen[name].add(a["image_id"])
    counts_path = out / "class_counts.csv"
    with open(counts_path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["class", "instances", "images"])
        w.writerows([n, counts[n], len(seen[n])] for n in taxonomy.names)
    coco = {
        "info": {"description": DESCRIPTION, "target_mpp": target_mpp, "patch_size": patch_size,
                 "taxonomy": taxonomy.names, "images_dir": "images", "source_slides": sources,
                 "background_ratio": background_ratio, "seed": seed, "point_box_um": point_box_um, "complete": True,
                 **({"annotated_classes": annotated_classes} if annotated_classes else {}),
                 **({"review": review_counts} if n_reviews else {})},
        "images": images, "annotations": anns_out, "categories": categories(taxonomy),
    }
    atomic_write(marker, json.dumps(coco) + "\n")
    summary = DatasetSummary(out, marker, counts_path, len(images), n_rare, n_bg, counts,
                             {n: len(s) for n, s in seen.items()}, review_counts if n_reviews else None)
    log.info("Dataset %s: %d patches (%d with rare cells, %d normal-only), %d boxes", out, len(images), n_rare, n_bg, len(anns_out))
    return summary


def _separated(calls, separation: float):
    """The calls by decreasing score, each at least ``separation`` level-0 px (in x or y) from those kept."""
    kept = []
    for c in sorted(calls, key=lambda c: -c.score):
        if all(abs(c.x - k.x) >= separation or abs(c.y - k.y) >= separation for k in kept):
            kept.append(c)
    return kept


def _choose_patches(anns, near, width, height, extent, scale, rare, d):
    """Grid patches holding a kept rare box, extra patches centred on rare cells no grid patch holds
    whole, and the pool of grid patches with only normal cells."""
    rare_origins, bg_pool = [], []
    held: set[int] = set()
    for y in _grid(height, extent):
        for x in _grid(width, extent):
            cands = near(x, y)
            seen = patch_boxes(cands, x, y, extent, scale, d.min_visible_fraction, d.min_box_px)
            if any(c in rare for _, c in seen):
                rare_origins.append((x, y))
            elif seen:
                bg_pool.append((x, y))
            for a in cands:
                b = a.box
                if a.class_name in rare and b[0] >= x and b[1] >= y and b[2] <= x + extent and b[3] <= y + extent:
                    held.add(id(a))
    for a in anns:
        if a.class_name in rare and id(a) not in held:
            x0, y0, x1, y1 = a.box
            cx = int(round((x0 + x1) / 2 - extent / 2))
            cy = int(round((y0 + y1) / 2 - extent / 2))
            o = (min(max(0, cx), max(0, width - extent)), min(max(0, cy), max(0, height - extent)))
            if o not in rare_origins:
                rare_origins.append(o)
    return rare_origins, bg_pool
