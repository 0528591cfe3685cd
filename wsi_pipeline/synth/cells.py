"""Papanicolaou-stained cell models, drawn as optical density so overlapping cells darken like real ones.

A cell is a list of :class:`Layer` s (cytoplasm, koilocytic halo, nuclei, hyphae) in pixels around the
cell centre. Geometry comes from a seeded generator, so the layout step (which needs only the box) and
the tile renderer (which needs the pixels) rebuild the same cell independently. Pixels follow
Beer-Lambert: ``rgb = glass * exp(-sum(od))``.

Sizes follow cytology references at the slide's mpp: superficial/intermediate squamous cells 40-60 um
with 5-8 um nuclei; neutrophils 10-12 um; ASC-US nuclei 2.5-3x intermediate area; LSIL with enlarged
hyperchromatic nuclei and a perinuclear halo; ASC-H and HSIL small cells with a high N/C ratio; SCC
pleomorphic orangeophilic cells; AGC crowded glandular groups.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np

# Colours measured on ../shared/data/cytology/lbc_field.jpg (glass RGB, optical densities per channel).
GLASS_RGB = np.array([246.0, 245.0, 252.0], dtype=np.float32)
CYAN = np.array([0.73, 0.43, 0.07], dtype=np.float32)  # cyanophilic cytoplasm (intermediate cells)
PINK = np.array([0.16, 0.49, 0.15], dtype=np.float32)  # eosinophilic cytoplasm (superficial cells)
ORANGE = np.array([0.07, 0.55, 0.80], dtype=np.float32)  # orangeophilic keratin (SCC)
NUCLEUS = np.array([1.26, 1.07, 0.25], dtype=np.float32)  # haematoxylin-stained nucleus
NEUTROPHIL = np.array([1.38, 1.34, 0.66], dtype=np.float32)
FUNGUS = np.array([0.30, 0.75, 0.40], dtype=np.float32)  # Candida pseudohyphae
TRICHOMONAS = np.array([0.42, 0.30, 0.10], dtype=np.float32)  # grey-green organism


@dataclass
class Layer:
    """Polygons filled (``width`` 0) or stroked with one stain; ``clear`` > 0 makes a halo instead."""

    polygons: list[np.ndarray]
    od: np.ndarray
    texture: float = 0.1  # relative density variation (chromatin, cytoplasm granularity)
    grain_px: float = 6.0  # size of that variation
    width: float = 0.0
    clear: float = 0.0  # fraction of the density below removed inside (koilocytic cavity)
    rim: float = 0.0  # extra density along the outline (cell membranes, folded edges)


@dataclass
class CellShape:
    layers: list[Layer]
    blur_px: float = 0.0
    extra: dict = field(default_factory=dict)

    def bounds(self) -> tuple[float, float, float, float]:
        """x0, y0, x1, y1 around the cell centre, in px."""
        pts = [(p, layer.width / 2) for layer in self.layers for p in layer.polygons]
        x0 = min(float(p[:, 0].min()) - w for p, w in pts)
        y0 = min(float(p[:, 1].min()) - w for p, w in pts)
        x1 = max(float(p[:, 0].max()) + w for p, w in pts)
        y1 = max(float(p[:, 1].max()) + w for p, w in pts)
        return x0, y0, x1, y1


def blob(rng: np.random.Generator, rx: float, ry: float, roughness: float, centre=(0.0, 0.0), n: int = 48) -> np.ndarray:
    """Smooth irregular closed outline (ellipse with random low harmonics), rotated at random."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    r = np.ones(n)
    for k in range(2, 6):
        r += roughness / (k - 1) * rng.normal() * np.cos(k * t + rng.uniform(0, 2 * np.pi))
    r = np.clip(r, 0.55, 1.6)
    a = rng.uniform(0, np.pi)
    x, y = rx * r * np.cos(t), ry * r * np.sin(t)
    return np.stack([x * np.cos(a) - y * np.sin(a) + centre[0], x * np.sin(a) + y * np.cos(a) + centre[1]], 1)


def polygon_cell(rng: np.random.Generator, radius: float, elongation: float = 1.3) -> np.ndarray:
    """Flat polygonal squamous cell: 5-8 corners, straight-ish edges, one axis a little longer."""
    k = int(rng.integers(5, 9))
    t = np.sort(rng.uniform(0, 2 * np.pi, k) + np.arange(k) * 2 * np.pi / k) % (2 * np.pi)
    t = np.sort(t)
    r = radius * rng.uniform(0.8, 1.12, k)
    e = rng.uniform(1.0, elongation)
    a = rng.uniform(0, np.pi)
    x, y = r * np.cos(t) * e, r * np.sin(t) / e
    pts = np.stack([x * np.cos(a) - y * np.sin(a), x * np.sin(a) + y * np.cos(a)], 1)
    # round the corners a little: densify and average neighbours
    dense = np.concatenate([np.linspace(pts[i], pts[(i + 1) % k], 6, endpoint=False) for i in range(k)])
    return (np.roll(dense, 1, 0) + dense + np.roll(dense, -1, 0)) / 3


def _squamous(rng, u, nucleus_um, nucleus_dark, irregular, halo=False, binucleate=False, size_um=(40, 60), pink_p=0.35, chromatin=0.15):
    radius = rng.uniform(*size_um) / 2 * u
    cyto_od = (PINK if rng.random() < pink_p else CYAN) * rng.uniform(0.55, 1.05)
    layers = [Layer([polygon_cell(rng, radius)], cyto_od, texture=0.2, grain_px=8 * u, rim=0.5)]
    rn = rng.uniform(*nucleus_um) / 2 * u
    offset = rng.normal(0, 0.12 * radius, 2)
    centres = [offset] if not binucleate else [offset - (rn * 0.95, 0), offset + (rn * 0.95, 0)]
    if halo:
        hr = min(rn * rng.uniform(1.7, 2.3) + (rn if binucleate else 0), 0.62 * radius)
        layers.append(Layer([blob(rng, hr, hr * rng.uniform(0.75, 0.95), 0.12, centre=offset)], cyto_od * 1.3, clear=0.88))
    nuclei = [blob(rng, rn * rng.uniform(0.85, 1.1), rn * rng.uniform(0.75, 1.0), irregular, centre=c) for c in centres]
    layers.append(Layer(nuclei, NUCLEUS * nucleus_dark, texture=chromatin, grain_px=max(1.5, 0.9 * u)))
    return layers


def nilm(rng: np.random.Generator, u: float) -> CellShape:
    kind = rng.random()
    if kind < 0.05:  # parabasal cell: small, round, dense cytoplasm, normal nucleus
        r = rng.uniform(9, 12) * u
        rn = rng.uniform(3.5, 4.5) * u
        return CellShape([Layer([blob(rng, r, r * 0.9, 0.06)], CYAN * 1.1, 0.1, 8 * u),
                          Layer([blob(rng, rn, rn * 0.9, 0.04)], NUCLEUS * 0.85, 0.15, u)])
    if kind < 0.38:  # superficial: pink, small pyknotic nucleus
        return CellShape(_squamous(rng, u, (4.0, 5.5), 1.35, 0.03, pink_p=0.8, chromatin=0.05))
    return CellShape(_squamous(rng, u, (6.5, 8.5), 0.8, 0.04, pink_p=0.15))  # intermediate


def inflammatory(rng: np.random.Generator, u: float) -> CellShape:
    if rng.random() < 0.2:  # lymphocyte
        r = rng.uniform(3.3, 4.0) * u
        return CellShape([Layer([blob(rng, r * 1.2, r * 1.15, 0.05)], CYAN * 0.35, 0.05),
                          Layer([blob(rng, r, r * 0.95, 0.05)], NEUTROPHIL * 1.1, 0.1, u)])
    r = rng.uniform(5.0, 6.0) * u  # neutrophil: faint cytoplasm, 3-4 nuclear lobes
    n_lobes = int(rng.integers(3, 5))
    a0 = rng.uniform(0, 2 * np.pi)
    lobes = []
    for i in range(n_lobes):
        a = a0 + i * 2 * np.pi / n_lobes + rng.normal(0, 0.3)
        d = rng.uniform(0.3, 0.45) * r
        rl = rng.uniform(0.3, 0.4) * r
        lobes.append(blob(rng, rl, rl * 0.8, 0.05, centre=(d * np.cos(a), d * np.sin(a)), n=20))
    return CellShape([Layer([blob(rng, r, r * 0.95, 0.08)], CYAN * 0.3, 0.05), Layer(lobes, NEUTROPHIL, 0.08, u)])


def asc_us(rng: np.random.Generator, u: float) -> CellShape:
    return CellShape(_squamous(rng, u, (11.0, 14.0), 1.1, 0.07, size_um=(38, 55), chromatin=0.22))


def lsil(rng: np.random.Generator, u: float) -> CellShape:
    return CellShape(_squamous(rng, u, (12.5, 17.0), 1.4, 0.13, halo=rng.random() < 0.8,
                               binucleate=rng.random() < 0.3, size_um=(45, 62), chromatin=0.3))


def _small_atypical(rng, u, size_um, nc, dark, irregular, centre=(0.0, 0.0)):
    r = rng.uniform(*size_um) / 2 * u
    rn = r * rng.uniform(*nc)
    off = np.asarray(centre) + rng.normal(0, 0.08 * r, 2)
    cyto = Layer([blob(rng, r, r * rng.uniform(0.75, 0.95), 0.1, centre=centre)], CYAN * rng.uniform(1.0, 1.35), 0.12, 4 * u)
    nuc = Layer([blob(rng, rn, rn * rng.uniform(0.75, 0.95), irregular, centre=off)], NUCLEUS * dark, 0.35, max(1.5, u))
    return cyto, nuc


def asc_h(rng: np.random.Generator, u: float) -> CellShape:
    cyto, nuc = _small_atypical(rng, u, (15, 22), (0.5, 0.62), 1.3, 0.08)
    return CellShape([cyto, nuc])


def hsil(rng: np.random.Generator, u: float) -> CellShape:
    """Single small high-N/C cell, or a small syncytial group (one annotation)."""
    n = 1 if rng.random() < 0.6 else int(rng.integers(2, 5))
    cytos, nucs = [], []
    for i in range(n):
        c = (0.0, 0.0) if i == 0 else tuple(rng.normal(0, 8 * u, 2))
        cyto, nuc = _small_atypical(rng, u, (11, 17), (0.72, 0.85), 1.6, 0.16, centre=c)
        cytos.append(cyto)
        nucs.append(nuc)
    return CellShape(cytos + nucs)


def scc(rng: np.random.Generator, u: float) -> CellShape:
    """Pleomorphic keratinising cell (tadpole/spindle), orangeophilic, with a large opaque nucleus."""
    length = rng.uniform(15, 30) * u
    wid = rng.uniform(6, 10) * u
    t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    taper = 1 + 0.45 * np.cos(t + np.pi)  # one end fatter: tadpole
    x = length * np.cos(t)
    y = wid * np.sin(t) * taper
    a = rng.uniform(0, np.pi)
    outline = np.stack([x * np.cos(a) - y * np.sin(a), x * np.sin(a) + y * np.cos(a)], 1)
    od = ORANGE * rng.uniform(1.0, 1.4) if rng.random() < 0.6 else CYAN * 1.3
    rn = rng.uniform(5, 8) * u
    head = np.array([-length * 0.35 * np.cos(a), -length * 0.35 * np.sin(a)])
    return CellShape([Layer([outline], od, 0.15, 5 * u),
                      Layer([blob(rng, rn, rn * 0.75, 0.22, centre=head)], NUCLEUS * 1.8, 0.3, u)])


def agc(rng: np.random.Generator, u: float) -> CellShape:
    """Crowded glandular group: enlarged overlapping oval nuclei in pale cytoplasm (one annotation)."""
    rx, ry = rng.uniform(25, 45) * u, rng.uniform(18, 32) * u
    outline = blob(rng, rx, ry, 0.12)
    spacing = rng.uniform(8, 10) * u
    axis = rng.uniform(0, np.pi)
    nuclei = []
    for gy in np.arange(-ry, ry, spacing * 0.87):
        for gx in np.arange(-rx, rx, spacing):
            p = np.array([gx + (spacing / 2 if int(gy / spacing) % 2 else 0), gy]) + rng.normal(0, 0.15 * spacing, 2)
            if (p[0] / rx) ** 2 + (p[1] / ry) ** 2 < 0.75:
                a, b = rng.uniform(5, 6.5) * u, rng.uniform(3.2, 4.2) * u
                t = np.linspace(0, 2 * np.pi, 20, endpoint=False)
                e = np.stack([a * np.cos(t), b * np.sin(t)], 1)
                rot = axis + rng.normal(0, 0.25)
                rmat = np.array([[np.cos(rot), -np.sin(rot)], [np.sin(rot), np.cos(rot)]])
                nuclei.append(e @ rmat.T + p)
    if not nuclei:
        nuclei.append(blob(rng, 5 * u, 3.5 * u, 0.05))
    return CellShape([Layer([outline], CYAN * 0.6 + PINK * 0.3, 0.15, 6 * u), Layer(nuclei, NUCLEUS * 1.05, 0.3, u)])


def trichomonas(rng: np.random.Generator, u: float) -> CellShape:
    r = rng.uniform(7, 12) * u
    t = np.linspace(0, 2 * np.pi, 40, endpoint=False)
    x, y = r * np.cos(t), r * 0.7 * np.sin(t) * (1 + 0.35 * np.cos(t))  # pear shape
    a = rng.uniform(0, 2 * np.pi)
    body = np.stack([x * np.cos(a) - y * np.sin(a), x * np.sin(a) + y * np.cos(a)], 1)
    c = (0.35 * r * np.cos(a), 0.35 * r * np.sin(a))
    nucleus = blob(rng, 0.35 * r, 0.15 * r, 0.05, centre=c, n=20)
    return CellShape([Layer([body], TRICHOMONAS * rng.uniform(0.8, 1.1), 0.2, 2 * u), Layer([nucleus], NUCLEUS * 0.55, 0.1)])


def candida(rng: np.random.Generator, u: float) -> CellShape:
    """Pseudohyphae: segmented thin tubes with constrictions, and a few budding yeasts."""
    pts = [np.zeros(2)]
    a = rng.uniform(0, 2 * np.pi)
    for _ in range(int(rng.integers(3, 7))):
        a += rng.normal(0, 0.35)
        pts.append(pts[-1] + rng.uniform(12, 25) * u * np.array([np.cos(a), np.sin(a)]))
    path = np.array(pts) - np.mean(pts, 0)
    width = rng.uniform(2.5, 3.5) * u
    joints = [blob(rng, width * 0.35, width * 0.35, 0.0, centre=p, n=12) for p in path[1:-1]]
    yeasts = [blob(rng, 2 * u, 1.4 * u, 0.05, centre=path[int(rng.integers(len(path)))] + rng.normal(0, 4 * u, 2), n=16)
              for _ in range(int(rng.integers(0, 4)))]
    layers = [Layer([path], FUNGUS * rng.uniform(0.8, 1.1), 0.1, 3 * u, width=width)]
    if yeasts:
        layers.append(Layer(yeasts, FUNGUS, 0.1))
    layers.append(Layer(joints, -FUNGUS * 0.4, 0.0))  # paler constrictions between segments
    return CellShape(layers)


SHAPES: dict[str, Callable[[np.random.Generator, float], CellShape]] = {
    "NILM": nilm, "INFL": inflammatory, "ASC-US": asc_us, "LSIL": lsil, "ASC-H": asc_h,
    "AGC": agc, "HSIL": hsil, "SCC": scc, "TRICH": trichomonas, "CAND": candida,
}


def make_shape(class_name: str, seed: int, index: int, px_per_um: float, blurred_fraction: float = 0.15) -> CellShape:
    """The cell ``index`` of a slide made with ``seed``; same arguments, same cell.

    Example:
        >>> s = make_shape("HSIL", seed=0, index=7, px_per_um=4.0)
        >>> x0, y0, x1, y1 = s.bounds(); 30 < x1 - x0 < 200
        True
    """
    rng = np.random.default_rng([seed, index])
    shape = SHAPES[class_name](rng, px_per_um)
    if rng.random() < blurred_fraction:
        shape.blur_px = rng.uniform(1.0, 2.5) * px_per_um / 4
    return shape


def _noise(rng: np.random.Generator, h: int, w: int, grain: float) -> np.ndarray:
    gh, gw = max(2, int(h / grain) + 2), max(2, int(w / grain) + 2)
    return cv2.resize(rng.standard_normal((gh, gw)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)


def render_od(shape: CellShape, seed: int, index: int) -> tuple[int, int, np.ndarray]:
    """Optical density of a cell: (x offset, y offset of the array from the cell centre, HxWx3 float32)."""
    rng = np.random.default_rng([seed, index, 1])
    margin = 3 + int(3 * shape.blur_px)
    x0, y0, x1, y1 = shape.bounds()
    ox, oy = int(np.floor(x0)) - margin, int(np.floor(y0)) - margin
    w, h = int(np.ceil(x1)) + margin - ox, int(np.ceil(y1)) + margin - oy
    od = np.zeros((h, w, 3), np.float32)
    for layer in shape.layers:
        mask = np.zeros((h, w), np.uint8)
        polys = [np.round((p - (ox, oy)) * 4).astype(np.int32) for p in layer.polygons]
        if layer.width > 0:
            cv2.polylines(mask, polys, False, 255, max(1, int(round(layer.width))), cv2.LINE_AA, shift=2)
        else:
            cv2.fillPoly(mask, polys, 255, cv2.LINE_AA, shift=2)
        m = mask.astype(np.float32) / 255.0
        if layer.clear > 0:
            inside = (od.sum(2) > 0.05).astype(np.float32)  # the cavity and its dense rim stay in the cell
            od *= (1 - layer.clear * m)[..., None]
            rim = (cv2.dilate(m, np.ones((5, 5), np.uint8)) - m) * inside
            od += rim[..., None] * layer.od
            continue
        if layer.rim > 0:
            m = m + layer.rim * np.clip(m - cv2.GaussianBlur(m, (0, 0), 2 + layer.grain_px / 3), 0, 1)
        if layer.texture > 0:
            m = m * np.clip(1 + layer.texture * _noise(rng, h, w, layer.grain_px), 0.2, 2.0)
        od += m[..., None] * layer.od
    np.maximum(od, 0, out=od)
    return ox, oy, cv2.GaussianBlur(od, (0, 0), 0.7 + shape.blur_px)
