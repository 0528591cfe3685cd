"""Model checkpoints: everything inference needs, plus resumable training state.

A checkpoint is one ``torch.save`` file (loaded with ``weights_only=True``: plain tensors,
numbers, strings, lists and dicts only) holding::

    format: "wsi_pipeline.checkpoint", format_version: 1
    meta:   architecture (DetectorSpec), taxonomy (class names in detector order, and the full
            taxonomy), target_mpp, patch_size, normalisation, loss {name, params, state},
            training {dataset, epochs, metrics, ...}, software versions, created
    model:  the detector's state_dict (the loss buffers are part of it)
    training_state: optimizer, scheduler, AMP scaler, epoch, RNG states (absent in exported models)

``load_checkpoint`` adds ``meta["sha256"]`` (of the file) and ``meta["path"]``.

Example:
    >>> import tempfile, os
    >>> from wsi_pipeline.models.detector import DetectorSpec, build_detector
    >>> from wsi_pipeline.models.losses import build_loss
    >>> spec = DetectorSpec(num_classes=2, fpn_channels=32, image_size=64)
    >>> det = build_detector(spec, build_loss("efl", 2))
    >>> path = os.path.join(tempfile.mkdtemp(), "m.pt")
    >>> _ = save_checkpoint(path, det, class_names=["A", "B"], target_mpp=1.0, patch_size=64,
    ...                 loss_name="efl", loss_params={})
    >>> loaded = load_checkpoint(path)
    >>> loaded.meta["taxonomy"], loaded.meta["architecture"]["backbone"], len(loaded.meta["sha256"])
    (['A', 'B'], 'resnet18', 64)
"""

from __future__ import annotations

import datetime as _dt
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torchvision

from .. import __version__
from ..errors import ArtifactError
from ..fsutil import atomic_path
from ..store.contracts import ModelMeta
from .detector import Detector, DetectorSpec, build_detector
from .losses import build_loss
from .torchfile import load_torch_file

FORMAT = "wsi_pipeline.checkpoint"
FORMAT_VERSION = 1


@dataclass
class LoadedModel:
    """A detector ready for inference, its metadata and (if saved) the training state."""

    detector: Detector
    meta: dict[str, Any]
    training_state: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def model_meta(self) -> ModelMeta:
        """``meta`` as the typed contract inference and the batch runner read."""
        return parse_model_meta(self.meta, self.meta.get("path"))


def parse_model_meta(meta: Mapping[str, Any], source: str | Path | None) -> ModelMeta:
    """A checkpoint's (or a stand-in model's) ``meta`` as a :class:`ModelMeta`: the one place it is parsed."""
    return ModelMeta.from_dict(meta, source)


def read_model_meta(path: str | Path) -> ModelMeta:
    """The metadata of checkpoint ``path`` (resolution, patch size, classes, sha256), without building the network."""
    path = Path(path)
    meta = read_checkpoint_file(path)["meta"]
    return parse_model_meta(dict(meta, sha256=file_sha256(path), path=str(path)), path)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def loss_state(detector: Detector) -> dict[str, list[float]]:
    """The loss buffers as plain lists (readable copy in ``meta``; the tensors are in ``model``)."""
    return {name: buf.detach().cpu().tolist() for name, buf in detector.criterion.named_buffers()}


def save_checkpoint(
    path: str | Path,
    detector: Detector,
    *,
    class_names: list[str],
    target_mpp: float,
    patch_size: int,
    loss_name: str,
    loss_params: dict[str, Any],
    taxonomy: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
    training_state: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically (temporary file, then rename), so a crash never leaves half a file."""
    path = Path(path)
    spec = detector.spec
    if len(class_names) != spec.num_classes:
        raise ValueError(f"{len(class_names)} class names for a {spec.num_classes}-class detector")
    meta = {
        "architecture": spec.to_dict(),
        "taxonomy": list(class_names),
        "taxonomy_full": taxonomy,
        "target_mpp": float(target_mpp),
        "patch_size": int(patch_size),
        "normalisation": {
            "input": "RGB, uint8 0-255 (B,H,W,3) or float 0-1 (B,3,H,W); the model normalises",
            "mean": list(spec.image_mean),
            "std": list(spec.image_std),
        },
        "loss": {"name": loss_name, "params": dict(loss_params), "state": loss_state(detector)},
        "training": training or {},
        "software": {"wsi_pipeline": __version__, "torch": str(torch.__version__), "torchvision": str(torchvision.__version__)},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "meta": meta,
        "model": {k: v.detach().cpu() for k, v in detector.state_dict().items()},
    }
    if training_state is not None:
        payload["training_state"] = training_state
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def read_checkpoint_file(path: str | Path) -> dict[str, Any]:
    """The raw checkpoint dict, with one-line :class:`ArtifactError` for every kind of bad file."""
    path = Path(path)
    payload = load_torch_file(path, "wsi_pipeline checkpoint")
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ArtifactError(path, "not a wsi_pipeline checkpoint (no 'format: wsi_pipeline.checkpoint' entry)")
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise ArtifactError(path, f"checkpoint format version {version}, this software reads version {FORMAT_VERSION}")
    for key in ("meta", "model"):
        if key not in payload:
            raise ArtifactError(path, f"checkpoint is missing its '{key}' section")
    return payload


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild the detector (with its loss state) from a checkpoint, in eval mode on ``device``."""
    path = Path(path)
    payload = read_checkpoint_file(path)
    meta = payload["meta"]
    try:
        spec = DetectorSpec.from_dict(meta["architecture"])
        criterion = build_loss(meta["loss"]["name"], spec.num_classes, meta["loss"].get("params"))
        detector = build_detector(spec, criterion)
        detector.load_state_dict(payload["model"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        reason = str(exc).splitlines()[0][:160]
        raise ArtifactError(path, f"checkpoint does not describe a model this software can build ({reason})") from None
    detector.to(device).eval()
    meta = dict(meta, sha256=file_sha256(path), path=str(path))
    return LoadedModel(detector=detector, meta=meta, training_state=payload.get("training_state"))


def export_checkpoint(src: str | Path, dst: str | Path, half: bool = True, model_card: dict[str, Any] | None = None) -> Path:
    """A deployable copy of checkpoint ``src``: no training state, floating-point weights in fp16 when
    ``half`` (halves the file; loading casts them back to fp32), optional ``meta["model_card"]``.

    Example:
        >>> import tempfile, os
        >>> from wsi_pipeline.models.detector import DetectorSpec, build_detector
        >>> from wsi_pipeline.models.losses import build_loss
        >>> d = tempfile.mkdtemp()
        >>> det = build_detector(DetectorSpec(num_classes=2, fpn_channels=32, image_size=64), build_loss("focal", 2))
        >>> _ = save_checkpoint(os.path.join(d, "m.pt"), det, class_names=["A", "B"], target_mpp=1.0, patch_size=64,
        ...                     loss_name="focal", loss_params={}, training_state={"epoch": 1})
        >>> out = export_checkpoint(os.path.join(d, "m.pt"), os.path.join(d, "m16.pt"), model_card={"name": "x"})
        >>> loaded = load_checkpoint(out)
        >>> loaded.training_state is None, loaded.meta["model_card"]["name"], loaded.meta["weights_dtype"]
        (True, 'x', 'float16')
    """
    payload = read_checkpoint_file(src)
    payload.pop("training_state", None)
    if half:
        payload["model"] = {k: v.half() if v.is_floating_point() else v for k, v in payload["model"].items()}
    payload["meta"] = dict(payload["meta"], weights_dtype="float16" if half else "float32")
    if model_card is not None:
        payload["meta"]["model_card"] = model_card
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dst) as tmp:
        torch.save(payload, tmp)
    return dst
