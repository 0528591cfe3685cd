"""Reading a file written by ``torch.save`` with a one-line error for every kind of bad file."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from ..errors import ArtifactError


def load_torch_file(path: str | Path, what: str) -> Any:
    """``torch.load(path)`` on the CPU (tensors only, no code); :class:`ArtifactError` naming ``what`` otherwise.

    Example:
        >>> load_torch_file("missing.pt", "checkpoint")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        wsi_pipeline.errors.ArtifactError: missing.pt: checkpoint not found
    """
    path = Path(path)
    if not path.exists():
        raise ArtifactError(path, f"{what} not found")
    if not path.is_file():
        raise ArtifactError(path, f"is not a file, expected a {what}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError, ValueError, OSError) as exc:
        raise ArtifactError(path, f"not a {what} (torch.load failed: {exc.__class__.__name__})") from None
