"""Int8 export of a checkpoint's network for onnxruntime on the CPU (``wsi model quantize``).

Int8 runs the network about 2.3x faster than fp32 onnxruntime on a CPU with AVX-512 VNNI (docs/inference.md),
but its activations need ranges measured on images like the ones it will see, so unlike the fp32 export it
cannot be made at run time from the checkpoint alone: ``wsi model quantize`` makes it once from a folder of
training patches (``wsi data build`` output, at the model's resolution) and writes it next to the checkpoint
as ``<stem>.<checkpoint sha256>.int8.onnx``. ``inference.precision: int8`` (or ``auto`` on the CPU) uses it
when it matches the checkpoint's sha256; otherwise detection runs in fp32 with one log line.

How (measured on training patches, ``benchmarks/int8_export.py``): the fp32 export with its frozen batch norms
folded into the convolutions (onnxruntime's basic graph optimisation: quantising a convolution's output before
its batch-norm scale loses the per-channel range), then onnxruntime static QDQ quantisation, int8 per-channel
weights, uint8 activations with min-max ranges. The stem (the first convolution, on the normalised image) and
the output convolutions (class logits, centre-ness: what the report thresholds) stay in fp32; quantising
them added the largest score errors for almost no speed.

Example:
    >>> from .runtime import int8_export_name
    >>> int8_export_name(Path("runs/v3/model.pt"), "ab12")  # where `wsi model quantize` writes by default
    'model.ab12.int8.onnx'
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..errors import ArtifactError
from ..fsutil import atomic_path
from .runtime import INT8_FORMAT, OnnxNetwork, export_network, int8_export_paths, read_int8_export

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
_BATCH = 4


def calibration_images(folders: list[Path], count: int, image_size: int, seed: int = 0) -> np.ndarray:
    """``count`` images drawn (with ``seed``) from ``folders`` as uint8 (N, S, S, 3): each centre-cropped to the
    model's training patch ``image_size``; smaller images are skipped. One-line errors for a missing folder or
    no usable image."""
    from PIL import Image  # noqa: PLC0415

    files: list[Path] = []
    for folder in folders:
        if not folder.is_dir():
            raise ArtifactError(folder, "calibration folder not found")
        files += sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    order = np.random.default_rng(seed).permutation(len(files))
    images = []
    for i in order:
        if len(images) == count:
            break
        with Image.open(files[i]) as im:
            rgb = np.asarray(im.convert("RGB"))
        h, w = rgb.shape[:2]
        if h < image_size or w < image_size:
            continue
        y, x = (h - image_size) // 2, (w - image_size) // 2
        images.append(rgb[y:y + image_size, x:x + image_size])
    if not images:
        raise ArtifactError(folders[0] if folders else None, f"no image of at least {image_size} px to calibrate on")
    return np.stack(images)


def fp32_nodes(model) -> list[str]:
    """Names of the convolutions kept in fp32: the first one (on the normalised image) and every convolution
    whose output reaches a graph output without passing another convolution (the heads' output layers)."""
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    producers = {out: n for n in model.graph.node for out in n.output}
    keep = {convs[0].name} if convs else set()
    for output in model.graph.output:
        stack, seen = [output.name], set()
        while stack:
            node = producers.get(stack.pop())
            if node is None or node.name in seen:
                continue
            seen.add(node.name)
            if node.op_type == "Conv":
                keep.add(node.name)
                continue
            stack += list(node.input)
    return sorted(keep)


@dataclass(frozen=True)
class QuantizeResult:
    path: Path
    images: int
    score_diff_p95: float  # |int8 - fp32| ranking score, 95th percentile over positions where fp32 >= 0.1
    score_diff_max: float
    kept_fp32: int  # convolutions left in fp32


def quantize_checkpoint(checkpoint: Path, folders: list[Path], out: Path | None = None, count: int = 96,
                        seed: int = 0) -> QuantizeResult:
    """Write the int8 export of ``checkpoint`` calibrated on ``count`` images from ``folders``; returns where,
    and how far its scores are from fp32 on those images (recorded in the file's metadata too).

    Example (a checkpoint from ``wsi train`` and its training patches):
        >>> quantize_checkpoint(Path("runs/v3/model.pt"), [Path("data/train/images")])  # doctest: +SKIP
        QuantizeResult(path=PosixPath('runs/v3/model.<sha256>.int8.onnx'), images=96, ...)
    """
    import onnx  # noqa: PLC0415
    import onnxruntime as ort  # noqa: PLC0415
    from onnxruntime.quantization import (  # noqa: PLC0415
        CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static)

    from ..models.checkpoint import file_sha256, load_checkpoint  # noqa: PLC0415
    from ..models.detector import FAMILIES  # noqa: PLC0415

    sha256 = file_sha256(checkpoint)
    loaded = load_checkpoint(checkpoint)
    detector = loaded.detector
    out = out or int8_export_paths(checkpoint, sha256)[0]
    images = calibration_images(folders, count, detector.spec.image_size, seed)
    with torch.inference_mode():
        normalised = detector.normalise(detector.as_float_images(torch.from_numpy(images))).numpy().astype(np.float32)

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self.start = 0

        def get_next(self) -> dict[str, np.ndarray] | None:
            if self.start >= len(normalised):
                return None
            self.start += _BATCH
            return {"images": normalised[self.start - _BATCH:self.start]}

    with tempfile.TemporaryDirectory() as tmp:
        fp32, folded = Path(tmp) / "fp32.onnx", Path(tmp) / "folded.onnx"
        keys = export_network(detector, fp32, sha256)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC  # folds the batch norms
        options.optimized_model_filepath = str(folded)
        options.log_severity_level = 3
        ort.InferenceSession(str(fp32), options, providers=["CPUExecutionProvider"])
        keep = fp32_nodes(onnx.load(str(folded)))
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out) as tmp_out:
            quiet = logging.getLogger()
            level = quiet.level
            quiet.setLevel(logging.ERROR)  # onnxruntime.quantization warns through the root logger
            try:
                quantize_static(str(folded), str(tmp_out), Batches(), quant_format=QuantFormat.QDQ, per_channel=True,
                                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                                calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=keep)
            finally:
                quiet.setLevel(level)
            int8 = OnnxNetwork(Path(tmp_out), keys, num_threads=0)
            reference = OnnxNetwork(fp32, keys, num_threads=0)
            diffs = _score_differences(int8, reference, torch.from_numpy(normalised), FAMILIES[detector.spec.detector])
            model = onnx.load(str(tmp_out))
            p95, top = (float(np.percentile(diffs, 95)), float(diffs.max())) if len(diffs) else (0.0, 0.0)
            meta = {"checkpoint_sha256": sha256, "format": INT8_FORMAT, "wsi_pipeline": __version__,
                    "calibration_images": str(len(images)), "calibration_folders": ", ".join(f.name for f in folders),
                    "kept_fp32": ", ".join(keep), "score_diff_p95": f"{p95:.4f}", "score_diff_max": f"{top:.4f}"}
            for key, value in meta.items():
                entry = model.metadata_props.add()
                entry.key, entry.value = key, value
            onnx.save(model, str(tmp_out))
    if read_int8_export(out, sha256) is None:  # cannot happen unless the file vanished
        raise ArtifactError(out, "int8 export was not written")
    return QuantizeResult(out, len(images), p95, top, len(keep))


def _score_differences(int8, reference, normalised: torch.Tensor, family) -> np.ndarray:
    """|int8 - fp32| ranking scores at every position and class where fp32 scores >= 0.1."""
    diffs = []
    for start in range(0, len(normalised), _BATCH):
        batch = normalised[start:start + _BATCH]
        ref = family.ranking_scores(reference(batch))
        got = family.ranking_scores(int8(batch))
        mask = ref >= 0.1
        diffs.append((got - ref).abs()[mask].numpy())
    return np.concatenate(diffs) if diffs else np.zeros(0, np.float32)


__all__ = ["QuantizeResult", "calibration_images", "fp32_nodes", "quantize_checkpoint"]
