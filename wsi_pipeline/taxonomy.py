"""The cell-class taxonomy (``configs/taxonomy.yaml``) shared by every stage."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from .errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
DEFAULT_TAXONOMY = CONFIG_DIR / "taxonomy.yaml"


@dataclass(frozen=True)
class CellClass:
    name: str
    label: str
    group: str
    abnormal: bool
    severity: int
    color: str

    @property
    def rgb(self) -> tuple[int, int, int]:
        h = self.color.lstrip("#")
        return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


@dataclass(frozen=True)
class Taxonomy:
    """Ordered cell classes; a class's position is its index in the detector's output.

    Example:
        >>> tax = load_taxonomy()
        >>> tax.index("HSIL"), tax["HSIL"].abnormal
        (6, True)
    """

    classes: tuple[CellClass, ...]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.classes]

    def __len__(self) -> int:
        return len(self.classes)

    def __getitem__(self, key: str | int) -> CellClass:
        if isinstance(key, int):
            return self.classes[key]
        return self.classes[self.index(key)]

    def index(self, name: str) -> int:
        for i, c in enumerate(self.classes):
            if c.name == name:
                return i
        raise KeyError(f"unknown cell class {name!r}; known: {', '.join(self.names)}")

    def abnormal_names(self) -> list[str]:
        return [c.name for c in self.classes if c.abnormal]

    def to_dict(self) -> dict:
        return {"version": 1, "classes": [c.__dict__.copy() for c in self.classes]}

    @classmethod
    def from_dict(cls, data: dict, source: str = "<taxonomy>") -> "Taxonomy":
        try:
            raw = data["classes"]
            classes = tuple(
                CellClass(
                    name=str(c["name"]),
                    label=str(c.get("label", c["name"])),
                    group=str(c.get("group", "other")),
                    abnormal=bool(c.get("abnormal", False)),
                    severity=int(c.get("severity", 0)),
                    color=str(c.get("color", "#FFFFFF")),
                )
                for c in raw
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(source, f"invalid taxonomy ({exc})") from None
        names = [c.name for c in classes]
        if not classes or len(set(names)) != len(names):
            raise ConfigError(source, "taxonomy needs at least one class and unique class names")
        return cls(classes)


def load_taxonomy(path: str | Path | None = None) -> Taxonomy:
    """Load a taxonomy YAML file (default: the project's ``configs/taxonomy.yaml``)."""
    path = Path(path) if path else DEFAULT_TAXONOMY
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(path, "taxonomy file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(path, f"not valid YAML ({exc.__class__.__name__})") from None
    return Taxonomy.from_dict(data or {}, source=str(path))
