"""The cell classifier of the loss benchmark on real CRIC cells (``benchmarks/longtail_cells.py``), which
``benchmarks/second_look_cells.py`` re-uses as a second look: the cell sets (``cric_cells`` crops and
``cric_fields`` point-annotated cells, each on its field's side of the split), ImageNet EfficientNet-Lite0
features of them (frozen, cached in chunks), and a linear sigmoid head per class trained by a loss on a batch
plan that is a function of the seed alone. The protocol and its numbers: ``benchmarks/longtail_cells.py``
and docs/losses.md."""

from __future__ import annotations

import csv
import logging
import math
import time
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ..datasets.annotations import class_mapper, field_id
from ..datasets.split import read_split
from ..models.backbones import EfficientNetLiteBody, backbone_entry, load_weights
from ..models.losses import prior_bias
from ..synth.config import load_synth_config
from ..taxonomy import load_taxonomy
from . import CRIC_SPLIT, CYTOLOGY
from .images import cut_windows, read_rgb
from .longtail import RECIPES

log = logging.getLogger("longtail_cells")

DATA = CYTOLOGY
SPLIT = CRIC_SPLIT

CLASSES = ["NILM", "ASC-US", "LSIL", "ASC-H", "HSIL", "SCC"]
ABNORMAL = CLASSES[1:]
BACKBONE = "efficientnet_lite0"

# The losses, each with the settings its paper uses (build_loss's defaults are those; docs/losses.md).
PRIOR = 0.01  # initial probability of every class (RetinaNet / focal-loss convention)
OFFICIAL = RECIPES["efl_official"]
LOSS_SPECS: dict[str, dict] = {
    "bce": {"loss": "bce"},
    "focal": {"loss": "focal", "params": {"gamma": 2.0, "alpha": 0.25}},
    "eqlv2": {"loss": "eqlv2", "params": {"gamma": 12.0, "mu": 0.8, "alpha": 4.0}},
    "efl": {"loss": "efl", "params": {"gamma": 2.0, "alpha": 0.25, "scale_factor": 8.0}},
    "efl_official": {"loss": OFFICIAL["loss"]["name"], "params": OFFICIAL["loss"]["params"],
                     "prior": OFFICIAL["model"]["prior_prob"], "repeat_factor": OFFICIAL["repeat_factor_threshold"]},
    "gradlibra": {"loss": "gradlibra"},
    "gradlibra_v2": {"loss": "gradlibra_v2"},
}

# Crops and windows (micrometres -> pixels at ~0.5 um/px, the detector's pixel size)
CROP_PX = 64  # the 30 um cric_cells crops (100 px at ~0.30 um/px)
WINDOWS = ((30.0, 64), (64.0, 96))  # context set: (window um, px) cut from the field at its mpp_estimate
VIEWS = 4  # cached augmentations per training cell: identity, h-flip, v-flip, 180 degree turn
CHUNK = 128  # cells per cached feature file
SPLIT_BLOCK = 8  # the fine-tuned variant trains blocks 8-15 from cached block-7 activations

# One schedule for every loss, fixed before the runs (not tuned on the test split).
SCHEDULE = {"epochs": 30, "batch_size": 128, "lr": 1e-3, "weight_decay": 1e-4}  # AdamW, cosine, linear head


# ------------------------------------------------------------------ cells


@dataclass
class Cells:
    """One cell set: per cell its id, field, class index, side and where its pixels come from."""

    name: str
    ids: list[str]
    fields: list[str]
    labels: np.ndarray
    sides: np.ndarray
    sources: list  # crop path, or (field image path, x, y, mpp)

    def index(self, side: str) -> np.ndarray:
        return np.flatnonzero(self.sides == side)

    def counts(self, rows: np.ndarray) -> dict[str, int]:
        got = Counter(self.labels[rows].tolist())
        return {c: got.get(i, 0) for i, c in enumerate(CLASSES)}


def _mapper():
    taxonomy = load_taxonomy()
    return class_mapper(taxonomy, load_synth_config(None, taxonomy).label_aliases)


def _limited(rows: list[dict], limit: int | None) -> list[dict]:
    """Every row, or the first ``limit`` per (side, class) by cell id (the smoke run's subset)."""
    rows = sorted(rows, key=lambda r: int(r["cell_id"]))
    if not limit:
        return rows
    taken: Counter = Counter()
    out = []
    for r in rows:
        key = (r["side"], r["class"])
        if taken[key] < limit:
            taken[key] += 1
            out.append(r)
    return out


def _cells(name: str, rows: list[dict], source) -> Cells:
    return Cells(name, [r["cell_id"] for r in rows], [r["field"] for r in rows],
                 np.array([CLASSES.index(r["class"]) for r in rows], np.int64), np.array([r["side"] for r in rows]),
                 [source(r) for r in rows])


def load_crop_cells(data: Path = DATA, split: Path = SPLIT, limit: int | None = None) -> Cells:
    """The ``cric_cells`` crops, each on its field's side of ``split`` (val = test)."""
    sides, to_class = read_split(split), _mapper()
    with open(data / "cric_cells" / "index.csv", newline="") as fh:
        rows = [{**r, "field": field_id(r["image"]), "class": to_class(r["label"])} for r in csv.DictReader(fh)]
    for r in rows:
        r["side"] = "test" if sides.side(r["field"]) == "val" else "train"
    return _cells("crops", _limited(rows, limit), lambda r: data / "cric_cells" / r["file"])


def load_context_cells(data: Path = DATA, split: Path = SPLIT, limit: int | None = None) -> Cells:
    """The ``cric_fields`` point-annotated cells, windows to be cut from the field at its ``mpp_estimate``."""
    sides, to_class = read_split(split), _mapper()
    folder = data / "cric_fields"
    with open(folder / "fields.csv", newline="") as fh:
        mpp = {r["image"]: float(r["mpp_estimate"]) for r in csv.DictReader(fh)}
    with open(folder / "cells.csv", newline="") as fh:
        rows = [{**r, "field": field_id(r["image"]), "class": to_class(r["label"])} for r in csv.DictReader(fh)]
    for r in rows:
        r["side"] = "test" if sides.side(r["field"]) == "val" else "train"
    rows = sorted(_limited(rows, limit), key=lambda r: (r["field"], int(r["cell_id"])))  # chunks share fields
    return _cells("context", rows, lambda r: (folder / r["image"], float(r["x"]), float(r["y"]), mpp[r["image"]]))


# ------------------------------------------------------------------ features


def dihedral(images: np.ndarray, view: int) -> np.ndarray:
    """View ``view`` of uint8 ``(B, H, W, 3)`` images: identity, h-flip, v-flip, 180 degree turn."""
    return [images, images[:, :, ::-1], images[:, ::-1], images[:, ::-1, ::-1]][view]


class Lite0(nn.Module):
    """EfficientNet-Lite0 with the bundled ImageNet weights, frozen BatchNorm, cut at block ``split_block``."""

    def __init__(self, split_block: int = SPLIT_BLOCK) -> None:
        super().__init__()
        self.body = EfficientNetLiteBody("efficientnet-lite0", frozen_batchnorm=True)
        load_weights(self.body, BACKBONE, "imagenet")
        self.body.eval()
        entry = backbone_entry(BACKBONE)
        self.register_buffer("mean", torch.tensor(entry.image_mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(entry.image_std).view(1, 3, 1, 1), persistent=False)
        self.split_block = split_block

    def blocks(self, x: Tensor, start: int, stop: int) -> Tensor:
        """Blocks ``start`` to ``stop - 1``, with the body's drop-connect rates (active only in training)."""
        n = self.body.net
        rate = n._global_params.drop_connect_rate
        for i in range(start, stop):
            x = n._blocks[i](x, drop_connect_rate=rate * i / len(n._blocks) if rate else None)
        return x

    def lower(self, images: np.ndarray) -> Tensor:
        """Block ``split_block - 1``'s activations of uint8 ``(B, H, W, 3)`` images."""
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(255.0)
        n = self.body.net
        x = n._swish(n._bn0(n._conv_stem((x - self.mean) / self.std)))
        return self.blocks(x, 0, self.split_block)

    def upper(self, act: Tensor) -> Tensor:
        """Pooled C5 (320) from block ``split_block - 1``'s activations."""
        return self.blocks(act, self.split_block, len(self.body.net._blocks)).mean(dim=(2, 3))


@lru_cache(maxsize=4)
def _field(path: Path) -> np.ndarray:
    return read_rgb(path)


def resized(images, px: int) -> np.ndarray:
    """uint8 ``(n, px, px, 3)`` from images of any size; a non-square one (a crop cut short by its field's edge,
    a few of ``cric_cells``) is mirrored out to a square first, half on each side."""
    import cv2  # noqa: PLC0415

    out = []
    for im in images:
        h, w = im.shape[:2]
        if h != w:
            dh, dw = max(w - h, 0), max(h - w, 0)
            im = cv2.copyMakeBorder(im, dh // 2, dh - dh // 2, dw // 2, dw - dw // 2, cv2.BORDER_REFLECT_101)
        out.append(cv2.resize(im, (px, px), interpolation=cv2.INTER_AREA))
    return np.stack(out)


def cell_images(cells: Cells, rows: np.ndarray) -> list[np.ndarray]:
    """One uint8 ``(n, px, px, 3)`` array per window of the set: the crop; or the field windows of :data:`WINDOWS`."""
    if cells.name == "crops":
        return [resized([read_rgb(cells.sources[i]) for i in rows], CROP_PX)]
    out = []
    for um, px in WINDOWS:
        windows = []
        for i in rows:
            image, x, y, mpp = cells.sources[i]
            windows.append(resized(cut_windows(_field(image), np.array([[x, y]]), round(um / mpp)), px)[0])
        out.append(np.stack(windows))
    return out


@torch.inference_mode()
def extract(net: Lite0, cells: Cells, rows: np.ndarray, views: int, cache: Path, keep_act: bool) -> dict[str, np.ndarray]:
    """``pooled (n, views, D)`` float32 (and ``act (n, views, C, h, w)`` float16 for the crops when ``keep_act``)
    of ``cells[rows]``, computed in chunks of :data:`CHUNK` cells cached under ``cache`` (a rerun resumes)."""
    cache.mkdir(parents=True, exist_ok=True)
    parts: dict[str, list] = {"pooled": [], "act": []}
    started = time.perf_counter()
    for k, lo in enumerate(range(0, len(rows), CHUNK)):
        chunk = rows[lo : lo + CHUNK]
        path = cache / f"chunk{k:04d}_{len(chunk)}.npz"
        if not path.is_file():
            pooled, acts = [], []
            images = cell_images(cells, chunk)
            for v in range(views):
                feats = []
                for window in images:
                    act = net.lower(dihedral(window, v))
                    feats.append(net.upper(act))
                    if keep_act and len(images) == 1:
                        acts.append(act.half().numpy())
                pooled.append(torch.cat(feats, dim=1).numpy())
            arrays = {"pooled": np.stack(pooled, axis=1)}
            if acts:
                arrays["act"] = np.stack(acts, axis=1)
            tmp = path.with_suffix(".tmp.npz")
            np.savez(tmp, **arrays)
            tmp.replace(path)
            log.info("%s: features of %d/%d cells (%.0f s)", cache.name, lo + len(chunk), len(rows), time.perf_counter() - started)
        with np.load(path) as z:
            parts["pooled"].append(z["pooled"])
            if keep_act and "act" in z:
                parts["act"].append(z["act"])
    return {k: np.concatenate(v) for k, v in parts.items() if v}


# ------------------------------------------------------------------ training


def batch_plan(labels: np.ndarray, epochs: int, batch_size: int, views: int, seed: int,
               repeat_threshold: float | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(rows, views)`` per step of the whole schedule, a function of the seed alone: every loss with the same
    seed sees the same batches and views. ``repeat_threshold``: repeat-factor sampling (each cell of class c
    ``max(1, sqrt(t / f_c))`` times per epoch in expectation, f_c its class's share).

    Example:
        >>> plan = batch_plan(np.array([0, 0, 0, 1]), epochs=2, batch_size=3, views=2, seed=0)
        >>> [len(rows) for rows, _ in plan]
        [3, 1, 3, 1]
    """
    rng = np.random.default_rng(seed)
    factor = None
    if repeat_threshold is not None:
        share = np.bincount(labels, minlength=labels.max() + 1) / len(labels)
        factor = np.maximum(1.0, np.sqrt(repeat_threshold / np.maximum(share[labels], 1e-12)))
    plan = []
    for _ in range(epochs):
        rows = np.arange(len(labels))
        if factor is not None:
            times = np.floor(factor).astype(int) + (rng.random(len(labels)) < factor - np.floor(factor))
            rows = np.repeat(rows, times)
        rows = rng.permutation(rows)
        view = rng.integers(views, size=len(rows))
        plan += [(rows[i : i + batch_size], view[i : i + batch_size]) for i in range(0, len(rows), batch_size)]
    return plan


class Standardise(nn.Module):
    def __init__(self, mean: Tensor, std: Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


def new_head(dim: int, seed: int, prior: float) -> nn.Linear:
    """The linear classifier; its weights are a function of the seed alone (the bias is the loss's prior)."""
    head = nn.Linear(dim, len(CLASSES))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        head.weight.normal_(0.0, 0.01, generator=generator)
        head.bias.fill_(prior_bias(prior))
    return head


def fit(model: nn.Module, criterion: nn.Module, inputs: Tensor, labels: np.ndarray, plan: list, schedule: dict,
        record: list | None = None) -> float:
    """Train ``model`` on ``inputs[rows, views]`` step by step of ``plan`` (AdamW, cosine); the last loss value.
    ``record`` collects each step's rows and views (the paired-seed test)."""
    targets = torch.nn.functional.one_hot(torch.from_numpy(labels), len(CLASSES)).float()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=schedule["lr"], weight_decay=schedule["weight_decay"])
    steps = len(plan)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: 0.5 * (1 + math.cos(math.pi * i / steps)))
    model.train()
    value = float("nan")
    for rows, views in plan:
        if record is not None:
            record.append((rows.copy(), views.copy()))
        x = inputs[torch.from_numpy(rows), torch.from_numpy(views)].float()
        loss = criterion(model(x), targets[rows], avg_factor=float(len(rows)))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        value = loss.item()
    return value


@torch.no_grad()
def predict(model: nn.Module, inputs: Tensor, batch_size: int = 512) -> np.ndarray:
    model.eval()
    return torch.cat([model(inputs[i : i + batch_size].float()) for i in range(0, len(inputs), batch_size)]).numpy()
