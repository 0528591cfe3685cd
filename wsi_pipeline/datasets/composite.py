"""Composited training sets from real labelled crops pasted onto real backgrounds.

Where a lab has few annotated slides, real labelled cell crops (a folder per class) can still teach a
detector, if the paste itself carries no signal. Earlier probes here learned the paste, not the cell
(training loss 0.001, 90% of real windows called abnormal), so this builder pastes **negatives in
exactly the same way as positives**:

* positives: crops of the taxonomy classes (``crop_classes``), labelled with their class;
* pasted negatives: crops of the folders in ``negative_crop_folders`` (flora, herpes, actinomyces in
  the ComparisonDetector crops: same source, same cropping, not abnormal squamous/glandular cells)
  and windows cut around real normal cells of the background images; pasted with the same optical
  density blending, soft rectangular mask, scale and rotation, and left **unlabelled**;
* unlabelled real cells of the background stay background.

So the detector's job is the abnormal cells (and organisms); normal squamous and inflammatory cells
are never boxes in these sets (the report's NILM counts need a model trained on annotated slides; see
docs/model_card.md). Every source is resampled from its own um/px to ``target_mpp`` before pasting.

Train and test are disjoint at the level of source crops (``test_fraction`` of each class's files,
chosen by a hash of the file name, so the split is stable) and of background regions (each background's
left ``train_width_fraction`` is train, the rest is test).

Example:
    >>> cfg = CompositeSetConfig(crops="../shared/data/cytology/cell_crops",
    ...     backgrounds=[BackgroundSource("../shared/data/cytology/lbc_field.jpg", 0.27)], images=8)
    >>> summary = build_composite_set(cfg, "composite_set/", split="train")  # doctest: +SKIP
    >>> summary.n_images  # doctest: +SKIP
    8
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..progress import progress_bar
from ..errors import ArtifactError, ConfigError
from ..paste import crop_density, optical_density, paste_od, warp_od
from ..resolution import CROPS_MPP, DEFAULT_TARGET_MPP
from .annotations import categories
from .layout import start_patch_set, write_patch
from ..taxonomy import Taxonomy, load_taxonomy

log = logging.getLogger(__name__)

SPLITS = ("train", "test")


@dataclass
class BackgroundSource:
    """A real field (any image OpenCV reads) and its pixel size."""

    path: str
    mpp: float


@dataclass
class CompositeSetConfig:
    crops: str = ""  # folder of labelled crops: <folder>/<n>.jpg
    crops_mpp: float = CROPS_MPP  # um/px of the crops
    crop_classes: dict[str, str] = field(default_factory=lambda: {
        "1": "ASC-US", "2": "ASC-H", "3": "LSIL", "4": "HSIL", "5": "SCC", "6": "AGC", "7": "TRICH", "8": "CAND"})
    negative_crop_folders: list[str] = field(default_factory=lambda: ["9", "10", "11"])
    backgrounds: list[BackgroundSource] = field(default_factory=list)
    target_mpp: float = DEFAULT_TARGET_MPP
    patch_size: int = 256
    images: int = 2000  # images to write for the split
    positives_per_image: list[int] = field(default_factory=lambda: [0, 3])  # inclusive range
    # relative frequency of each positive class (a natural long tail, e.g. the long-tail benchmark);
    # empty: every class equally often. Classes left out are not pasted.
    class_frequencies: dict[str, float] = field(default_factory=dict)
    negatives_per_image: list[int] = field(default_factory=lambda: [1, 4])
    normal_window_fraction: float = 0.5  # share of pasted negatives cut from the backgrounds (rest: negative crops)
    normal_window_um: list[float] = field(default_factory=lambda: [30.0, 70.0])  # side of a normal-cell window
    scale_jitter: float = 0.2  # +- relative scale of every pasted object (uncertain source um/px)
    feather_px: float = 4.0  # soft mask edge, target px
    max_overlap_iou: float = 0.2  # a pasted box may overlap earlier ones at most this much
    test_fraction: float = 0.2
    train_width_fraction: float = 0.7
    jpeg_quality: int = 92
    seed: int = 0


@dataclass
class CompositeSummary:
    out_dir: Path
    n_images: int
    class_counts: dict[str, int]
    n_negatives: int

    def table(self) -> str:
        lines = [f"{'class':<8} {'boxes':>6}"] + [f"{k:<8} {v:>6}" for k, v in self.class_counts.items() if v]
        lines.append(f"{'pasted negatives':<16} {self.n_negatives}")
        return "\n".join(lines)


def in_test_split(path: Path, test_fraction: float) -> bool:
    """Stable crop-level split: a file is in the test split when the hash of its folder/name says so."""
    digest = hashlib.sha1(f"{path.parent.name}/{path.name}".encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < test_fraction


def split_files(folder: Path, split: str, test_fraction: float) -> list[Path]:
    files = sorted(folder.glob("*.jpg")) + sorted(folder.glob("*.png"))
    return [f for f in files if in_test_split(f, test_fraction) == (split == "test")]


def read_background(source: BackgroundSource, target_mpp: float, split: str, train_width_fraction: float) -> np.ndarray:
    """The split's part of a background, resampled to ``target_mpp``, RGB float32."""
    image = cv2.imread(source.path, cv2.IMREAD_COLOR)
    if image is None:
        raise ArtifactError(source.path, "background image missing or unreadable")
    scale = source.mpp / target_mpp
    image = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    cut = int(image.shape[1] * train_width_fraction)
    part = image[:, :cut] if split == "train" else image[:, cut:]
    return cv2.cvtColor(part, cv2.COLOR_BGR2RGB).astype(np.float32)


def normal_cell_windows(rgb: np.ndarray, mpp: float, window_um: tuple[float, float], rng: np.random.Generator,
                        max_windows: int = 400) -> list[np.ndarray]:
    """Windows around real cells of a background (RGB at ``mpp``), of a random side in ``window_um``:
    half centred on dark, compact nucleus-sized blobs (nuclei, neutrophils), half on random cell-covered
    pixels (cytoplasm of squamous cells). They are pasted as unlabelled negatives."""
    density = optical_density(rgb.astype(np.uint8)).sum(2)
    nuclei = (density > max(1.2, float(np.percentile(density, 97)))).astype(np.uint8)
    nuclei = cv2.morphologyEx(nuclei, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    n, _, stats, centroids = cv2.connectedComponentsWithStats(nuclei)
    area_um2 = stats[1:, cv2.CC_STAT_AREA] * mpp**2
    keep = np.nonzero((area_um2 >= 8) & (area_um2 <= 200))[0] + 1
    rng.shuffle(keep)
    centres = [tuple(int(v) for v in centroids[i]) for i in keep[: max_windows // 2]]
    ys, xs = np.nonzero(density > 0.3)
    if len(xs):
        pick = rng.integers(len(xs), size=max_windows - len(centres))
        centres += [(int(xs[i]), int(ys[i])) for i in pick]
    windows = []
    h, w = rgb.shape[:2]
    for cx, cy in centres:
        side = int(rng.uniform(*window_um) / mpp)
        x0, y0 = min(max(0, cx - side // 2), max(0, w - side)), min(max(0, cy - side // 2), max(0, h - side))
        window = rgb[y0 : y0 + side, x0 : x0 + side]
        if min(window.shape[:2]) >= 8:
            windows.append(np.ascontiguousarray(window.astype(np.uint8)))
    return windows


def _place(rng: np.random.Generator, size: int, box: tuple[int, int, int, int], taken: list[tuple], max_iou: float):
    """A paste centre keeping the content box inside the image and overlapping earlier boxes little; None if none."""
    bx0, by0, bx1, by1 = box
    if bx1 - bx0 >= size or by1 - by0 >= size:
        return None
    for _ in range(20):
        cx = int(rng.integers(-bx0, size - bx1 + 1))
        cy = int(rng.integers(-by0, size - by1 + 1))
        cand = (cx + bx0, cy + by0, cx + bx1, cy + by1)
        if all(_iou(cand, t) <= max_iou for t in taken):
            return cx, cy
    return None


def _iou(a, b) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def build_composite_set(cfg: CompositeSetConfig, out_dir: str | Path, split: str = "train",
                        taxonomy: Taxonomy | None = None, progress: bool = True) -> CompositeSummary:
    """Write a COCO patch dataset (``images/``, ``annotations.json`` last) of composited real cells."""
    if split not in SPLITS:
        raise ConfigError(None, f"split must be train or test, got {split!r}")
    if not cfg.backgrounds:
        raise ConfigError(None, "composite set needs at least one background image (backgrounds)")
    taxonomy = taxonomy or load_taxonomy()
    root = Path(cfg.crops)
    if not root.is_dir():
        raise ArtifactError(root, "crops folder not found")
    unknown = sorted((set(cfg.crop_classes.values()) | set(cfg.class_frequencies)) - set(taxonomy.names))
    if unknown:
        raise ConfigError(None, f"crop_classes / class_frequencies name classes not in the taxonomy: {', '.join(unknown)}")
    rng = np.random.default_rng([cfg.seed, SPLITS.index(split)])
    positives = {name: [] for name in dict.fromkeys(cfg.crop_classes.values())}
    for folder, name in cfg.crop_classes.items():
        positives[name] += split_files(root / folder, split, cfg.test_fraction)
    positives = {k: v for k, v in positives.items() if v}
    if not positives:
        raise ArtifactError(root, f"no crops for the {split} split in folders {', '.join(cfg.crop_classes)}")
    negative_files = [f for folder in cfg.negative_crop_folders for f in split_files(root / folder, split, cfg.test_fraction)]
    backgrounds = [read_background(b, cfg.target_mpp, split, cfg.train_width_fraction) for b in cfg.backgrounds]
    window_od = [optical_density(w) for b in backgrounds
                 for w in normal_cell_windows(b, cfg.target_mpp, tuple(cfg.normal_window_um), rng)]
    if not window_od and not negative_files:
        raise ArtifactError(root, "no pasted negatives: no negative crop folders and no cells found on the backgrounds")

    out = Path(out_dir)
    description = f"wsi_pipeline composited real cells ({split})"
    images_dir, marker = start_patch_set(out, description)
    size, classes = cfg.patch_size, sorted(positives)
    class_p = None
    if cfg.class_frequencies:
        classes = [c for c in classes if cfg.class_frequencies.get(c, 0) > 0]
        if not classes:
            raise ConfigError(None, "class_frequencies gives no class with crops a frequency > 0")
        class_p = np.array([cfg.class_frequencies[c] for c in classes], float)
        class_p /= class_p.sum()
    images, anns = [], []
    counts = dict.fromkeys(taxonomy.names, 0)
    n_negatives = 0
    for i in progress_bar(range(cfg.images), desc=f"composite {split}", unit="image", disable=not progress):
        bg = backgrounds[int(rng.integers(len(backgrounds)))]
        y = int(rng.integers(0, max(1, bg.shape[0] - size + 1)))
        x = int(rng.integers(0, max(1, bg.shape[1] - size + 1)))
        canvas = np.ascontiguousarray(np.rot90(bg[y : y + size, x : x + size], int(rng.integers(4))))
        if canvas.shape[:2] != (size, size):
            canvas = cv2.resize(canvas, (size, size))
        objects = [("neg", None)] * int(rng.integers(cfg.negatives_per_image[0], cfg.negatives_per_image[1] + 1))
        n_pos = int(rng.integers(cfg.positives_per_image[0], cfg.positives_per_image[1] + 1))
        if class_p is None:
            objects += [("pos", classes[int(rng.integers(len(classes)))]) for _ in range(n_pos)]
        else:
            objects += [("pos", classes[int(k)]) for k in rng.choice(len(classes), size=n_pos, p=class_p)]
        order = rng.permutation(len(objects))
        taken: list[tuple] = []
        image_id = len(images) + 1
        for k in order:
            kind, name = objects[k]
            jitter = rng.uniform(1 - cfg.scale_jitter, 1 + cfg.scale_jitter)
            if kind == "pos":
                files = positives[name]
                od, scale = crop_density(str(files[int(rng.integers(len(files)))])), cfg.crops_mpp / cfg.target_mpp
            elif window_od and (not negative_files or rng.random() < cfg.normal_window_fraction):
                od, scale = window_od[int(rng.integers(len(window_od)))], 1.0
            else:
                od, scale = crop_density(str(negative_files[int(rng.integers(len(negative_files)))])), cfg.crops_mpp / cfg.target_mpp
            ox, oy, warped, box = warp_od(od, scale * jitter, cfg.feather_px, rng)
            at = _place(rng, size, box, taken, cfg.max_overlap_iou)
            if at is None:
                continue
            cx, cy = at
            paste_od(canvas, warped, cx + ox, cy + oy)
            placed = (cx + box[0], cy + box[1], cx + box[2], cy + box[3])
            taken.append(placed)
            if kind == "pos":
                counts[name] += 1
                anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": taxonomy.index(name) + 1,
                             "bbox": [placed[0], placed[1], placed[2] - placed[0], placed[3] - placed[1]],
                             "area": (placed[2] - placed[0]) * (placed[3] - placed[1]), "iscrowd": 0})
            else:
                n_negatives += 1
        file_name = f"{split}_{i:06d}.jpg"
        write_patch(images_dir, file_name, np.clip(canvas + 0.5, 0, 255).astype(np.uint8), cfg.jpeg_quality)
        images.append({"id": image_id, "file_name": file_name, "width": size, "height": size})
    coco = {
        "info": {"description": description, "target_mpp": cfg.target_mpp,
                 "patch_size": size, "taxonomy": taxonomy.names, "images_dir": "images", "split": split,
                 "composite": asdict(cfg), "complete": True},
        "images": images, "annotations": anns, "categories": categories(taxonomy),
    }
    tmp = marker.with_name(marker.name + ".partial")
    tmp.write_text(json.dumps(coco) + "\n")
    tmp.replace(marker)
    log.info("Composite %s set %s: %d images, %d boxes, %d pasted negatives", split, out, len(images), len(anns), n_negatives)
    return CompositeSummary(out, len(images), counts, n_negatives)


def load_composite_config(path: str | Path | None = None, overrides: dict | None = None) -> CompositeSetConfig:
    """A composite-set config: dataclass defaults, then YAML ``path``, then ``overrides``; validated.

    Example:
        >>> cfg = load_composite_config(overrides={"images": 10, "backgrounds": [{"path": "field.jpg", "mpp": 0.27}]})
        >>> cfg.images, cfg.backgrounds[0].mpp, cfg.target_mpp
        (10, 0.27, 0.5)
    """
    from ..config import from_dict, merge, read_yaml  # noqa: PLC0415

    data = read_yaml(path) if path is not None else {}
    source = str(path) if path is not None else "<composite config>"
    if overrides:
        data = merge(data, overrides)
    cfg = from_dict(CompositeSetConfig, data, "", source)
    checks = [
        (0.05 <= cfg.target_mpp <= 20 and 0.05 <= cfg.crops_mpp <= 20, "target_mpp and crops_mpp must be 0.05-20 um/px"),
        (all(0.05 <= b.mpp <= 20 for b in cfg.backgrounds), "backgrounds[].mpp must be 0.05-20 um/px"),
        (32 <= cfg.patch_size <= 4096, "patch_size must be 32-4096 px"),
        (cfg.images >= 1, "images must be >= 1"),
        (len(cfg.positives_per_image) == 2 and 0 <= cfg.positives_per_image[0] <= cfg.positives_per_image[1],
         "positives_per_image must be [min, max] with 0 <= min <= max"),
        (len(cfg.negatives_per_image) == 2 and 0 <= cfg.negatives_per_image[0] <= cfg.negatives_per_image[1],
         "negatives_per_image must be [min, max] with 0 <= min <= max"),
        (len(cfg.normal_window_um) == 2 and 0 < cfg.normal_window_um[0] <= cfg.normal_window_um[1],
         "normal_window_um must be [min, max] > 0"),
        (0 <= cfg.scale_jitter < 1 and 0 <= cfg.normal_window_fraction <= 1, "scale_jitter must be in [0, 1), normal_window_fraction in [0, 1]"),
        (0 < cfg.test_fraction < 1 and 0 < cfg.train_width_fraction < 1, "test_fraction and train_width_fraction must be in (0, 1)"),
        (0 <= cfg.max_overlap_iou <= 1, "max_overlap_iou must be in [0, 1]"),
        (all(v >= 0 for v in cfg.class_frequencies.values()), "class_frequencies must be >= 0"),
        (1 <= cfg.jpeg_quality <= 100, "jpeg_quality must be 1-100"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(source, message)
    return cfg
