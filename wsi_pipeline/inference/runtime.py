"""Which runtime computes the network: eager torch, or an ONNX export of the checkpoint run by onnxruntime.

``inference.backend`` (checked in ``config.py``):

* ``torch``: the checkpoint's detector, eager PyTorch (with autocast on a GPU).
* ``onnxruntime``: on the CPU, the network part of the detector (backbone, FPN, heads: everything up to
  the per-anchor outputs) is exported once to ONNX and run by onnxruntime; anchor decoding, top-k, NMS
  and the tile merge stay the same torch code (``Detector.predict(..., network=...)``), so the boxes
  differ only by floating-point rounding in the network (checked after every export: a mismatch above
  :data:`EXPORT_TOLERANCE` keeps torch). On a GPU torch with AMP is used whatever the setting.
* ``auto``: onnxruntime on the CPU when it is installed (measured faster on a 2-core CPU:
  ``benchmarks/cpu_tiles.py``, docs/inference.md), torch on a GPU.

An int8 network (``inference/quantize.py``) replaces the fp32 one when ``inference.precision`` is ``int8``, or
``auto`` and the checkpoint has int8 calibration ranges (``wsi model quantize``).

A missing onnxruntime (or onnx) falls back to torch with one log line. The export is cached next to the
checkpoint as ``<checkpoint stem>.<checkpoint sha256>.onnx``, or under ``<user cache>/onnx/`` when the
checkpoint's folder is not writable (the bundled starter model inside an installed package). The file
name carries the checkpoint's sha256 and the file's metadata carries it again with the export format and
software versions, so an export of another (older) checkpoint is never used: it is rebuilt.

Example:
    >>> resolve_backend("torch", "cpu")
    'torch'
    >>> resolve_backend("onnxruntime", "cuda")
    'torch'
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Callable
from pathlib import Path

import torch

from .. import __version__
from ..fsutil import atomic_path, cache_dir

log = logging.getLogger(__name__)

EXPORT_FORMAT = "wsi_pipeline.onnx/1"  # bump when the exported graph's inputs or outputs change
EXPORT_TOLERANCE = 1e-3  # largest difference allowed between the export's and torch's head outputs (logits)
OPSET = 17
_PROBE_SIZE = 256  # px of the random tile the export is checked on
_PACKAGE = Path(__file__).resolve().parent.parent


def runtime_available() -> bool:
    """onnxruntime and onnx are importable."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnx"))


def resolve_backend(backend: str, device_type: str) -> str:
    """``torch`` or ``onnxruntime`` for the configured backend on a device type; GPUs always use torch."""
    if device_type != "cpu" or backend == "torch":
        return "torch"
    if not runtime_available():
        if backend == "onnxruntime":
            log.warning("inference.backend onnxruntime: onnxruntime is not installed, using torch "
                        "(pip install onnxruntime onnx)")
        else:
            log.info("onnxruntime is not installed; detecting with torch (pip install onnxruntime onnx is faster on CPUs)")
        return "torch"
    return "onnxruntime"


def export_paths(checkpoint: Path, sha256: str, suffix: str = ".onnx") -> list[Path]:
    """Where the export of ``checkpoint`` may live, in order: next to it, then the user cache (used when the
    checkpoint's folder is read-only, e.g. the bundled starter model inside an installed package);
    ``suffix`` ``.int8.onnx`` for the int8 export (``inference/quantize.py``)."""
    name = f"{checkpoint.stem}.{sha256}{suffix}"
    cached = cache_dir() / "onnx" / name
    folder = checkpoint.resolve().parent
    if folder.is_relative_to(_PACKAGE):  # never write into the installed package (the bundled starter model)
        return [cached]
    return [folder / name, cached]


class OnnxNetwork:
    """The detector's network (``Detector.head_outputs``) run by onnxruntime; callable like it."""

    def __init__(self, path: Path, keys: list[str], num_threads: int, precision: str = "fp32") -> None:
        import onnxruntime as ort  # noqa: PLC0415

        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, num_threads)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # warnings of the graph optimiser are not the user's business
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.keys = keys
        self.path = path
        self.precision = precision  # fp32 | int8 (built from the calibration of ``wsi model quantize``)

    def with_threads(self, num_threads: int) -> OnnxNetwork:
        """Another session of the same network with ``num_threads`` threads (one per CPU stream)."""
        return OnnxNetwork(self.path, self.keys, num_threads, self.precision)

    def __call__(self, normalised: torch.Tensor) -> dict[str, torch.Tensor]:
        outputs = self.session.run(self.keys, {"images": normalised.detach().cpu().float().contiguous().numpy()})
        return {k: torch.from_numpy(v) for k, v in zip(self.keys, outputs)}


class _Network(torch.nn.Module):
    """The exported part: normalised, padded images -> head outputs as a tuple in ``keys`` order."""

    def __init__(self, detector: torch.nn.Module, keys: list[str]) -> None:
        super().__init__()
        self.detector = detector
        self.keys = keys

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        head = self.detector.head_outputs(images)
        return tuple(head[k] for k in self.keys)


def _head_keys(detector) -> list[str]:
    with torch.inference_mode():
        return sorted(detector.head_outputs(torch.zeros(1, 3, _PROBE_SIZE, _PROBE_SIZE)).keys())


def _read_export(path: Path, sha256: str) -> list[str] | None:
    """The output names of a usable export at ``path``, or None (absent, damaged, or of another checkpoint)."""
    import onnx  # noqa: PLC0415

    if not path.is_file():
        return None
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # a damaged file is rebuilt, never used
        return None
    props = {p.key: p.value for p in model.metadata_props}
    if props.get("checkpoint_sha256") != sha256 or props.get("format") != EXPORT_FORMAT \
            or props.get("torch") != str(torch.__version__):
        return None
    return [o.name for o in model.graph.output]


def export_network(detector, path: Path, sha256: str) -> list[str]:
    """Export ``detector``'s network to ``path`` (atomically) with its identity in the metadata; the output names."""
    import onnx  # noqa: PLC0415

    keys = _head_keys(detector)
    module = _Network(detector, keys).eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    dynamic = {"images": {0: "batch", 2: "height", 3: "width"}, **{k: {0: "batch", 1: "anchors"} for k in keys}}
    with atomic_path(path) as tmp:
        import warnings  # noqa: PLC0415

        with warnings.catch_warnings():  # the exporter's deprecation and constant-folding notes
            warnings.simplefilter("ignore")
            torch.onnx.export(module, (torch.zeros(1, 3, _PROBE_SIZE, _PROBE_SIZE),), str(tmp), input_names=["images"],
                              output_names=keys, dynamic_axes=dynamic, opset_version=OPSET, dynamo=False)
        model = onnx.load(str(tmp))
        for key, value in {"checkpoint_sha256": sha256, "format": EXPORT_FORMAT, "torch": str(torch.__version__),
                           "wsi_pipeline": __version__}.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(model, str(tmp))
    detector.eval()  # the exporter restores the module's previous mode; the detector must stay in eval
    return keys


def max_difference(network: Callable[[torch.Tensor], dict[str, torch.Tensor]], detector, images: torch.Tensor) -> float:
    """Largest absolute difference between ``network``'s and torch's head outputs on normalised ``images``."""
    with torch.inference_mode():
        ref = detector.head_outputs(images)
    got = network(images)
    return max(float((got[k].float() - ref[k].float()).abs().max()) for k in ref)


def _export_somewhere(detector, checkpoint: Path, candidates: list[Path], sha256: str) -> tuple[Path, list[str]]:
    """Export to the first candidate folder that can be written (next to the checkpoint, else the user cache)."""
    for i, path in enumerate(candidates):
        try:
            log.info("Exporting %s to ONNX for onnxruntime (once per checkpoint): %s", checkpoint.name, path)
            return path, export_network(detector, path, sha256)
        except OSError:
            if i == len(candidates) - 1:
                raise
            log.info("%s is not writable; the export goes to the user cache", path.parent)
    raise AssertionError("unreachable")


def onnx_network(detector, checkpoint: Path | None, sha256: str, num_threads: int) -> OnnxNetwork | None:
    """An onnxruntime network for ``detector`` (exported or taken from the cache), or None when it cannot be
    used (no checkpoint file to name the export after, export failure, outputs differing from torch's);
    every None is logged in one line and detection goes on with torch."""
    if checkpoint is None or not sha256 or not hasattr(detector, "head_outputs"):
        log.info("onnxruntime needs a checkpoint file; detecting with torch")
        return None
    candidates = export_paths(checkpoint, sha256)
    try:
        found = [(p, k) for p in candidates if (k := _read_export(p, sha256)) is not None]
        fresh = not found
        if fresh:
            path, keys = _export_somewhere(detector, checkpoint, candidates, sha256)
        else:
            path, keys = found[0]
        network = OnnxNetwork(path, keys, num_threads)
        if fresh:
            probe = torch.rand(1, 3, _PROBE_SIZE, _PROBE_SIZE, generator=torch.Generator().manual_seed(0))
            diff = max_difference(network, detector, detector.normalise(probe))
            if not diff <= EXPORT_TOLERANCE:
                path.unlink(missing_ok=True)
                log.warning("ONNX export of %s differs from torch by %.2g (> %g); detecting with torch",
                            checkpoint.name, diff, EXPORT_TOLERANCE)
                return None
        return network
    except Exception as exc:  # noqa: BLE001 - any exporter or runtime failure: torch still works
        log.warning("onnxruntime could not run %s (%s: %s); detecting with torch", checkpoint.name,
                    exc.__class__.__name__, str(exc).splitlines()[0][:160] if str(exc) else "")
        return None


__all__ = ["EXPORT_TOLERANCE", "OnnxNetwork", "export_network", "export_paths", "max_difference", "onnx_network",
           "resolve_backend", "runtime_available"]
