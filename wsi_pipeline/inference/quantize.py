"""Int8 network for onnxruntime on the CPU: calibration ranges (``wsi model quantize``) and the int8 export.

Int8 runs the network about 2.2x faster than fp32 onnxruntime on a CPU with AVX-512 VNNI (docs/inference.md),
but its activations need ranges measured on images like the ones it will see, so unlike the fp32 export it
cannot be made from the checkpoint alone. ``wsi model quantize`` measures them once on training patches
(``wsi data build`` output, at the model's resolution) and writes them, with what they were measured on, next to
the checkpoint as ``<stem>.<checkpoint sha256>.int8.json`` (a few tens of kB; the bundled model ships its own).
Detection (``inference.precision: int8``, or ``auto`` on the CPU) builds the int8 export from the fp32 export and
those ranges once per checkpoint, caches it like the fp32 export (``<stem>.<sha256>.int8.onnx``) and runs it.

How (measured on training patches, ``benchmarks/int8_export.py``): the fp32 export with its frozen batch norms
folded into the convolutions (onnxruntime's basic graph optimisation: quantising a convolution's output before
its batch-norm scale loses the per-channel range), then onnxruntime static QDQ quantisation, int8 per-channel
weights, uint8 activations with min-max ranges. The stem (the first convolution, on the normalised image) and
the output convolutions (class logits, centre-ness, box regression) stay in fp32; quantising them added the
largest score errors for almost no speed.

Example:
    >>> from .runtime import export_paths
    >>> export_paths(Path("runs/v3/model.pt"), "ab12", ".int8.json")[0].name  # where `wsi model quantize` writes
    'model.ab12.int8.json'
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from ..errors import ArtifactError
from ..fsutil import atomic_path
from .runtime import OnnxNetwork, export_network, export_paths

log = logging.getLogger(__name__)

CALIBRATION_FORMAT = "wsi_pipeline.int8-calibration/1"
INT8_FORMAT = "wsi_pipeline.onnx-int8/1"  # bump when the exported graph's inputs or outputs change
CALIBRATION_SUFFIX, INT8_SUFFIX = ".int8.json", ".int8.onnx"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
_BATCH = 4


def read_calibration(path: Path, sha256: str) -> dict[str, Any] | None:
    """The int8 calibration at ``path`` when it is one of checkpoint ``sha256``, else None (absent, damaged,
    another checkpoint's)."""
    try:
        calibration = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    ok = isinstance(calibration, dict) and calibration.get("format") == CALIBRATION_FORMAT \
        and calibration.get("checkpoint_sha256") == sha256
    return calibration if ok else None


def _calibration_beside(checkpoint: Path, sha256: str) -> Path:
    """Where `wsi model quantize` writes a checkpoint's calibration by default: next to it."""
    return checkpoint.resolve().parent / f"{checkpoint.stem}.{sha256}{CALIBRATION_SUFFIX}"


def find_calibration(checkpoint: Path | None, sha256: str) -> tuple[Path, dict[str, Any]] | None:
    """The first usable int8 calibration of ``checkpoint``: next to it (the bundled model ships one), then the
    user cache."""
    if checkpoint is None or not sha256:
        return None
    paths = [_calibration_beside(checkpoint, sha256), *export_paths(checkpoint, sha256, CALIBRATION_SUFFIX)]
    for path in dict.fromkeys(paths):
        if (calibration := read_calibration(path, sha256)) is not None:
            return path, calibration
    return None


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


def fold_batch_norms(src: Path, dst: Path) -> None:
    """``src`` with its batch norms folded into the convolutions, written to ``dst`` (onnxruntime's basic graph
    optimisation)."""
    import onnxruntime as ort  # noqa: PLC0415

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC  # folds the batch norms
    options.optimized_model_filepath = str(dst)
    options.log_severity_level = 3
    ort.InferenceSession(str(src), options, providers=["CPUExecutionProvider"])


def batch_reader(normalised: np.ndarray) -> Any:
    """An onnxruntime calibration reader giving ``normalised`` images (N, 3, S, S) a few at a time."""
    from onnxruntime.quantization import CalibrationDataReader  # noqa: PLC0415

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self.start = 0

        def get_next(self) -> dict[str, np.ndarray] | None:
            if self.start >= len(normalised):
                return None
            self.start += _BATCH
            return {"images": normalised[self.start - _BATCH:self.start]}

    return Batches()


def quantize_qdq(src: Path, dst: Path, exclude: list[str], reader: Any = None, ranges_path: Path | None = None) -> None:
    """onnxruntime static quantisation of ``src`` to ``dst`` with the shipped settings (QDQ, int8 per-channel
    weights, uint8 min-max activations), convolutions ``exclude`` left in fp32; the ranges measured with
    ``reader`` (and saved to ``ranges_path`` when given) or, without a reader, read from ``ranges_path``."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static  # noqa: PLC0415

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # onnxruntime.quantization warns through the root logger
    try:
        quantize_static(str(src), str(dst), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=exclude,
                        calibration_cache_path=str(ranges_path) if ranges_path else None)
    finally:
        root.setLevel(level)


def _quantize(fp32: Path, out: Path, sha256: str, reader: Any = None, ranges: dict | None = None,
              ranges_out: Path | None = None) -> list[str]:
    """Write the int8 export of the fp32 export ``fp32`` to ``out`` (atomically): ranges measured with
    ``reader`` (and saved to ``ranges_out``) or taken from ``ranges``; returns the convolutions kept in fp32."""
    import onnx  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as tmp:
        folded, cache = Path(tmp) / "folded.onnx", ranges_out or Path(tmp) / "ranges.json"
        fold_batch_norms(fp32, folded)
        graph = onnx.load(str(folded))
        keep = fp32_nodes(graph)
        if ranges is not None:
            names = {t for n in graph.graph.node for t in (*n.input, *n.output)}
            missing = set(ranges.get("data", {})) - names
            if missing or not ranges.get("data"):
                raise ValueError(f"calibration ranges name {len(missing)} tensors this export does not have")
            cache.write_text(json.dumps(ranges))
        with atomic_path(out) as tmp_out:
            quantize_qdq(folded, tmp_out, keep, reader, cache)
            model = onnx.load(str(tmp_out))
            for key, value in {"checkpoint_sha256": sha256, "format": INT8_FORMAT, "wsi_pipeline": __version__}.items():
                entry = model.metadata_props.add()
                entry.key, entry.value = key, value
            onnx.save(model, str(tmp_out))
    return keep


def int8_network(fp32: OnnxNetwork, checkpoint: Path | None, sha256: str, num_threads: int) -> OnnxNetwork | None:
    """The int8 counterpart of the fp32 network ``fp32`` when ``checkpoint`` has int8 calibration ranges: its
    export taken from the cache, or built once from the fp32 export and the ranges. None without ranges, or
    (with one log line) when the export cannot be built."""
    found = find_calibration(checkpoint, sha256)
    if found is None:
        return None
    candidates = export_paths(checkpoint, sha256, INT8_SUFFIX)
    for path in candidates:
        if path.is_file():
            try:
                network = OnnxNetwork(path, fp32.keys, num_threads, precision="int8")
            except Exception:  # noqa: BLE001 - a damaged file is rebuilt
                continue
            props = network.session.get_modelmeta().custom_metadata_map  # no `import onnx` (~1 s) to read it
            if props.get("checkpoint_sha256") == sha256 and props.get("format") == INT8_FORMAT:
                return network
    for i, path in enumerate(candidates):
        try:
            log.info("Building the int8 network of %s from its calibration (once per checkpoint): %s",
                     checkpoint.name, path)
            _quantize(fp32.path, path, sha256, ranges=found[1]["ranges"])
            return OnnxNetwork(path, fp32.keys, num_threads, precision="int8")
        except OSError:
            if i < len(candidates) - 1:
                continue
            log.warning("could not write the int8 network of %s; detecting in fp32", checkpoint.name)
        except Exception as exc:  # noqa: BLE001 - fp32 still works
            log.warning("could not build the int8 network of %s from %s (%s: %s); detecting in fp32",
                        checkpoint.name, found[0].name, exc.__class__.__name__, str(exc).splitlines()[0][:160])
            return None
    return None


@dataclass(frozen=True)
class QuantizeResult:
    path: Path  # the calibration file
    images: int
    score_diff_p95: float  # |int8 - fp32| ranking score, 95th percentile over positions where fp32 >= 0.1
    score_diff_max: float
    kept_fp32: int  # convolutions left in fp32


def quantize_checkpoint(checkpoint: Path, folders: list[Path], out: Path | None = None, count: int = 96,
                        seed: int = 0) -> QuantizeResult:
    """Measure int8 calibration ranges of ``checkpoint`` on ``count`` images from ``folders`` and write them
    (``<stem>.<sha256>.int8.json`` next to it, or ``out``), with how far the int8 network's scores are from
    fp32 on those images.

    Example (a checkpoint from ``wsi train`` and its training patches):
        >>> quantize_checkpoint(Path("runs/v3/model.pt"), [Path("data/train/images")])  # doctest: +SKIP
        QuantizeResult(path=PosixPath('runs/v3/model.<sha256>.int8.json'), images=96, ...)
    """
    from ..models.checkpoint import file_sha256, load_checkpoint  # noqa: PLC0415
    from ..models.detector import FAMILIES  # noqa: PLC0415

    sha256 = file_sha256(checkpoint)
    detector = load_checkpoint(checkpoint).detector
    out = out or _calibration_beside(checkpoint, sha256)
    images = calibration_images(folders, count, detector.spec.image_size, seed)
    with torch.inference_mode():
        normalised = detector.normalise(detector.as_float_images(torch.from_numpy(images))).numpy().astype(np.float32)

    with tempfile.TemporaryDirectory() as tmp:
        fp32, int8, ranges = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx", Path(tmp) / "ranges.json"
        keys = export_network(detector, fp32, sha256)
        keep = _quantize(fp32, int8, sha256, reader=batch_reader(normalised), ranges_out=ranges)
        diffs = _score_differences(OnnxNetwork(int8, keys, 0), OnnxNetwork(fp32, keys, 0), torch.from_numpy(normalised),
                                   FAMILIES[detector.spec.detector])
        p95, top = (float(np.percentile(diffs, 95)), float(diffs.max())) if len(diffs) else (0.0, 0.0)
        calibration = {"format": CALIBRATION_FORMAT, "checkpoint_sha256": sha256, "wsi_pipeline": __version__,
                       "calibration_images": len(images), "calibration_folders": [f.name for f in folders],
                       "kept_fp32": keep, "score_diff_p95": round(p95, 4), "score_diff_max": round(top, 4),
                       "ranges": json.loads(ranges.read_text())}
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp_out:
        Path(tmp_out).write_text(json.dumps(calibration))
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


__all__ = ["CALIBRATION_FORMAT", "INT8_FORMAT", "QuantizeResult", "batch_reader", "calibration_images",
           "find_calibration", "fold_batch_norms", "fp32_nodes", "int8_network", "quantize_checkpoint", "quantize_qdq",
           "read_calibration"]
