"""A train / validation split by field (image or slide), made once and committed as a CSV.

Cells of one field are never on both sides: a validation number is always on fields the model
never trained on. The split is drawn from the cells' labels with a fixed seed: the first draw of
``seed, seed + 1, ...`` whose validation side holds at least ``min_val_cells`` of every class (or
a third of a class that has fewer than three times as many), and between ``val_fraction`` +- 0.05 of the
fields, is kept. The split file lists every field with its side and per-class cell counts::

    field,split,source,cells,NILM,ASC-US,...
    008df697b9283d9ad4774096584d2efb,train,cric_fields,5,4,0,...

``field`` is the image's stem: a crop, a point annotation and a field image of the same field
all find their side by it (:func:`field_id`).
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ArtifactError, ConfigError
from ..taxonomy import load_taxonomy
from .annotations import class_mapper, field_id
from .config import label_aliases

SPLITS = ("train", "val")


@dataclass(frozen=True)
class FieldSplit:
    """Which side each field is on; :meth:`side` raises for a field the split does not know."""

    sides: dict[str, str]
    path: Path | None = None
    seed: int | None = None
    cells: dict[str, Counter] = field(default_factory=dict)
    classes: list[str] = field(default_factory=list)

    def side(self, name: str | Path) -> str:
        key = field_id(name)
        if key not in self.sides:
            raise ArtifactError(self.path, f"field {key} is not in the split")
        return self.sides[key]

    def fields(self, split: str) -> list[str]:
        return sorted(f for f, s in self.sides.items() if s == split)

    def table(self) -> str:
        """Fields and cells per class on each side."""
        lines = []
        for source in sorted({k[0] for k in self.classes}):
            keys = [k for k in self.classes if k[0] == source]
            lines.append(f"{source:<12} {'fields':>6} " + " ".join(f"{k[1]:>7}" for k in keys))
            for side in SPLITS:
                fs = [f for f in self.fields(side) if any(self.cells[f][k] for k in keys)]
                lines.append(f"  {side:<10} {len(fs):>6} " + " ".join(f"{sum(self.cells[f][k] for f in fs):>7}" for k in keys))
        return "\n".join(lines)


def draw_split(cells: dict[str, Counter], classes: list, val_fraction: float = 0.25, seed: int = 0,
               min_val_cells: int = 30, min_val_share: float = 1 / 3, max_tries: int = 10_000) -> tuple[dict[str, str], int]:
    """``({field: "train" | "val"}, seed used)``: the first seeded draw that meets the constraints.

    ``classes`` are the keys of the counters to constrain: class names, or ``(source, class)`` pairs
    so that every source (a crop collection, a set of annotated fields) meets them on its own.

    Example:
        >>> cells = {f"f{i}": Counter({"NILM": 10, "HSIL": i % 3}) for i in range(40)}
        >>> sides, used = draw_split(cells, ["NILM", "HSIL"], 0.25, min_val_cells=5)
        >>> sum(s == "val" for s in sides.values()) in range(8, 13)
        True
    """
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(None, f"val_fraction must be between 0 and 1, got {val_fraction}")
    fields = sorted(cells)
    totals = {c: sum(cells[f][c] for f in fields) for c in classes}
    need = {c: min(min_val_cells, int(np.ceil(min_val_share * totals[c]))) for c in classes}
    lo, hi = val_fraction - 0.05, val_fraction + 0.05
    for s in range(seed, seed + max_tries):
        rng = np.random.default_rng(s)
        val = {f for f, u in zip(fields, rng.random(len(fields))) if u < val_fraction}
        if not lo <= len(val) / len(fields) <= hi:
            continue
        got = {c: sum(cells[f][c] for f in val) for c in classes}
        # the validation side must also leave most of every class to training
        if all(got[c] >= need[c] and got[c] <= 0.5 * totals[c] for c in classes):
            return {f: ("val" if f in val else "train") for f in fields}, s
    raise ConfigError(None, f"no split in {max_tries} draws meets the per-class minimum {need}")


def write_split(path: str | Path, sides: dict[str, str], cells: dict[str, Counter], sources: dict[str, str],
                classes: list[str]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["field", "split", "source", "cells", *classes])
        for f in sorted(sides):
            w.writerow([f, sides[f], sources.get(f, ""), sum(cells[f][c] for c in classes), *(cells[f][c] for c in classes)])
    return path


def split_from_point_csvs(cell_csvs: list[str | Path], out: str | Path, val_fraction: float = 0.25, seed: int = 0,
                          min_val_cells: int = 30) -> FieldSplit:
    """Draw a split (:func:`draw_split`) over every field of CSVs with the columns ``image`` and ``label``
    (a point CSV, a crop index) and write it to ``out``.

    Example:
        >>> s = split_from_point_csvs(["cric_fields/cells.csv", "cric_cells/index.csv"], "split.csv")  # doctest: +SKIP
        >>> print(s.table())  # doctest: +SKIP
    """

    taxonomy = load_taxonomy()
    to_class = class_mapper(taxonomy, label_aliases(taxonomy))
    cells: dict[str, Counter] = {}
    by_source: dict[str, Counter] = {}
    sources: dict[str, set[str]] = {}
    for path in map(Path, cell_csvs):
        try:
            with open(path, newline="", encoding="utf-8-sig") as fh:
                rows = list(csv.DictReader(fh))
        except FileNotFoundError:
            raise ArtifactError(path, "cell table not found") from None
        if not rows or "image" not in rows[0] or "label" not in rows[0]:
            raise ArtifactError(path, "a cell table needs the columns image and label")
        for i, r in enumerate(rows, start=2):
            name = to_class(r["label"])
            if name is None:
                raise ArtifactError(path, f"line {i}: label {r['label']!r} is not a taxonomy class or alias")
            key = field_id(r["image"])
            by_source.setdefault(key, Counter())[(path.parent.name, name)] += 1
            cells.setdefault(key, Counter())[name] += 1
            sources.setdefault(key, set()).add(path.parent.name)
    classes = [c for c in taxonomy.names if any(cells[f][c] for f in cells)]
    keys = sorted({k for counts in by_source.values() for k in counts})
    sides, used = draw_split(by_source, keys, val_fraction, seed, min_val_cells)
    write_split(out, sides, cells, {f: "+".join(sorted(s)) for f, s in sources.items()}, classes)
    return FieldSplit(sides, Path(out), used, by_source, keys)


def read_split(path: str | Path) -> FieldSplit:
    """The committed split file (see the module docstring); a one-line error when it is unusable.

    Example:
        >>> s = read_split("configs/splits/cric.csv")  # doctest: +SKIP
        >>> s.side("008df697b9283d9ad4774096584d2efb.jpg")  # doctest: +SKIP
        'train'
    """
    path = Path(path)
    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except FileNotFoundError:
        raise ArtifactError(path, "split file not found") from None
    if not rows or "field" not in rows[0] or "split" not in rows[0]:
        raise ArtifactError(path, "not a split file (needs the columns field and split)")
    sides: dict[str, str] = {}
    for i, r in enumerate(rows, start=2):
        if r["split"] not in SPLITS:
            raise ArtifactError(path, f"line {i}: split must be one of {', '.join(SPLITS)}, got {r['split']!r}")
        if r["field"] in sides:
            raise ArtifactError(path, f"line {i}: field {r['field']} is listed twice")
        sides[r["field"]] = r["split"]
    return FieldSplit(sides, path)
