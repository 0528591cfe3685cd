"""Errors that reach the user as one line: which file, and why."""

from __future__ import annotations

from pathlib import Path


class WsiError(Exception):
    """A failure the user can act on, reported as ``<file>: <reason>`` without a traceback.

    Example:
        >>> str(WsiError("slide.svs", "not a TIFF file"))
        'slide.svs: not a TIFF file'
    """

    def __init__(self, path: str | Path | None, reason: str) -> None:
        self.path = str(path) if path is not None else None
        self.reason = reason
        super().__init__(f"{self.path}: {reason}" if self.path else reason)


class SlideError(WsiError):
    """The slide file is missing, unreadable, unsupported or unusable (no mpp, empty)."""


class ConfigError(WsiError):
    """A configuration file or option is invalid."""


class ArtifactError(WsiError):
    """An on-disk artifact (patch store, detections table, checkpoint) is missing, incomplete or mismatched."""
