"""Named registries (detector families, backbones, losses, slide formats, exporters) and their one error.

Example:
    >>> colours = Registry("colour", {"red": 1})
    >>> colours["red"]
    1
    >>> colours["blue"]
    Traceback (most recent call last):
    wsi_pipeline.registry.UnknownNameError: unknown colour 'blue' (known: red)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping
from typing import Generic, TypeVar

from .errors import ConfigError

T = TypeVar("T")


class UnknownNameError(ConfigError, KeyError, ValueError):
    """A name that is not in its registry.

    It is a :class:`ConfigError` (a one-line user error) and, because callers of the registries caught
    these before there was one type, also a ``KeyError`` (losses) and a ``ValueError`` (model specs).
    """

    def __init__(self, what: str, name: object, known: Iterator[str] | list[str]) -> None:
        super().__init__(None, f"unknown {what} {name!r} (known: {', '.join(known)})")

    __str__ = Exception.__str__  # KeyError would quote the message


class Registry(MutableMapping[str, T], Generic[T]):
    """A name -> entry mapping whose missing names raise :class:`UnknownNameError`; entries keep their
    registration order (the order they are tried or listed in). Assigning a name that is already there is a
    bug (``ValueError``); deleting one is for tests that add a temporary entry."""

    def __init__(self, what: str, entries: Mapping[str, T] | None = None) -> None:
        self.what = what
        self._entries: dict[str, T] = dict(entries or {})

    def register(self, name: str, entry: T) -> T:
        """Add ``entry`` under ``name``; a name registered twice is a bug (``ValueError``)."""
        self[name] = entry
        return entry

    def __setitem__(self, name: str, entry: T) -> None:
        if name in self._entries:
            raise ValueError(f"{self.what} {name!r} is registered twice")
        self._entries[name] = entry

    def __delitem__(self, name: str) -> None:
        del self._entries[name]

    def __getitem__(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(self.what, name, list(self._entries)) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.what!r}, {list(self._entries)})"


__all__ = ["Registry", "UnknownNameError"]
