"""Run a detector over every patch of a patch store and write one slide-level detections table.

Flow: check that the model's resolution and patch size match the store's, plan the device,
read chunk-aligned batches in background threads while the model computes, map each batch's
boxes to level-0 pixels and save them in ``detections.partial/`` (resume point), then merge the
tile-overlap duplicates of all batches and write ``detections.parquet`` atomically, marked
complete only when every patch was processed.

Any object with ``predict(images, score_threshold) -> list[dict]`` (boxes, scores, labels,
class_scores per image) plus a ``meta`` mapping works as the model (see docs/inference.md).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from .. import __version__
from ..config import InferenceConfig
from ..errors import ArtifactError, WsiError
from ..progress import progress_bar
from ..resolution import same_mpp
from ..store.artifacts import DETECTIONS_NAME
from ..models.checkpoint import parse_model_meta
from ..store.contracts import DetectionsMeta, InferenceRecord, ModelMeta
from ..store.detections import Detections, read_detections, write_detections
from ..store.source import PatchSource, open_patch_source, store_record
from .device import DevicePlan, plan_device
from .merge import merge_overlaps, to_level0, touches_patch_border
from .partial import PartialResults, RawDetections
from .reader import PrefetchReader, plan_batches
from .quantize import int8_network
from .runtime import onnx_network, resolve_backend

log = logging.getLogger(__name__)

BORDER_TOLERANCE_PX = 1.0  # patch px: a box this close to a patch border may be a cut cell


class Predictor(Protocol):
    def predict(self, images: torch.Tensor, score_threshold: float = 0.05) -> list[dict[str, torch.Tensor]]: ...


class ModelLike(Protocol):
    """What detect_store needs from a loaded checkpoint (``models.checkpoint.LoadedModel``)."""

    detector: Predictor
    meta: Mapping[str, Any]


@dataclass
class DetectResult:
    detections_path: Path
    n_detections: int
    n_patches: int
    patches_run: int  # patches processed in this run (fewer than n_patches when resuming)
    seconds: float
    patches_per_second: float  # of this run's processed patches, model + data
    data_wait_fraction: float  # share of the batch loop spent waiting for patches from the store
    device: str
    precision: str
    batch_size: int


def detect_store(
    store_path: str | Path,
    model: ModelLike | str | Path,
    out_dir: str | Path,
    cfg: InferenceConfig | None = None,
    progress: bool = True,
) -> DetectResult:
    """Detect cells in every patch of ``store_path`` and write ``out_dir/detections.parquet``.

    ``model`` is a checkpoint path or an already loaded model (``detector`` + ``meta``).
    Rerunning after an interruption continues from the last finished batch; rerunning after
    success with the same model and settings returns the existing table.

    Example (with a store from ``wsi tile`` and a checkpoint from ``wsi train``):
        >>> result = detect_store("work/slide/patches.zarr", "model.pt", "work/slide")  # doctest: +SKIP
        >>> result.n_detections, result.detections_path.name                              # doctest: +SKIP
        (5321, 'detections.parquet')
    """
    cfg = cfg or InferenceConfig()
    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    store = open_patch_source(store_path)
    model_path = None if _is_loaded(model) else Path(model)  # type: ignore[arg-type]
    plan = plan_device(cfg.device, cfg.precision, cfg.batch_size, store.patch_size, cfg.num_threads)
    loaded = model if model_path is None else load_model(model_path, plan.device)
    meta = parse_model_meta(loaded.meta, model_path or "model")
    check_compatible(meta, store, model_path or meta.path or "model")
    taxonomy = [str(n) for n in meta.taxonomy]
    num_classes = len(taxonomy)

    model_sha256 = _model_sha256(meta, model_path)
    if isinstance(loaded.detector, torch.nn.Module):
        loaded.detector.to(plan.device).eval()
    backend, network = _runtime(cfg, plan, loaded.detector, model_path or _path_of(loaded.meta), model_sha256)
    if network is not None and network.precision != plan.precision:
        plan = replace(plan, precision=network.precision)
    identity = {
        "store_fingerprint": store.fingerprint,
        "model_sha256": model_sha256,
        "score_threshold": cfg.score_threshold,
        "n_patches": store.n_patches,
        "software": __version__,
    }
    if plan.precision == "int8":  # int8 boxes differ from fp32 ones: never resume or reuse one as the other
        identity["precision"] = "int8"
    final_path = out_dir / DETECTIONS_NAME
    if _finished_before(final_path, identity, cfg):
        log.info("Detections for this store and model are already complete: %s", final_path)
        det = read_detections(final_path)
        return DetectResult(final_path, len(det), store.n_patches, 0, 0.0, 0.0, 0.0,
                            plan.device.type, plan.precision, plan.batch_size)
    if final_path.exists():
        log.info("Replacing %s (it came from another model, store or setting)", final_path)
        final_path.unlink()

    partial = PartialResults.open(out_dir, identity)
    done = partial.done_mask(store.n_patches)
    chunk = max(1, int(store.patches_per_chunk)) if store.n_patches else 1
    batches = plan_batches(store.n_patches, chunk, plan.batch_size, done)
    todo = sum(stop - start for start, stop in batches)
    if done.any():
        log.info("Resuming: %d of %d patches were already processed", int(done.sum()), store.n_patches)
    detector = loaded.detector
    log.info("Detecting cells in %d tiles of %d px on %s (%s, %s, batch %d)", todo, store.patch_size, plan.device,
             backend, plan.precision, plan.batch_size)
    loop_start = time.perf_counter()
    wait = _run_batches(store, detector, batches, partial, plan, cfg, num_classes, progress, network)
    loop_seconds = time.perf_counter() - loop_start

    raw = partial.load_all(num_classes)
    if not partial.done_mask(store.n_patches).all():  # cannot happen unless files vanished mid-run
        raise ArtifactError(partial.folder, "some patch batches have no results; rerun `wsi detect` to finish them")
    merged = _merge(raw, store, cfg)
    seconds = time.perf_counter() - t_start
    write_detections(final_path, _to_table(merged, taxonomy), _metadata(store, meta, model_path, plan, cfg, taxonomy,
                                                                       identity, seconds, backend))
    partial.remove()
    rate = todo / loop_seconds if todo and loop_seconds > 0 else 0.0
    log.info("Found %d cells (%d raw boxes before merging overlaps) in %.1f s; wrote %s",
             len(merged), len(raw), seconds, final_path)
    return DetectResult(final_path, len(merged), store.n_patches, todo, seconds, rate,
                        wait / loop_seconds if loop_seconds > 0 else 0.0,
                        plan.device.type, plan.precision, plan.batch_size)


def check_compatible(meta: ModelMeta, store: PatchSource, model_name: str | Path) -> None:
    """The detector must see patches at the resolution it was trained on.

    The tile size is free: the detectors are fully convolutional and their per-image limits grow with
    the tile's area (``Detector.tile_limits``), so a store cut into tiles larger (or smaller) than the
    training patch (``meta.patch_size``, recorded in the detections' model section) is accepted.
    """
    model_mpp = float(meta.target_mpp)
    if not same_mpp(model_mpp, store.target_mpp):
        raise ArtifactError(
            model_name,
            f"model was trained at {model_mpp:g} um/px but the patch store {store.path} has {store.target_mpp:g} um/px; "
            f"tile the slide again with target_mpp {model_mpp:g} or use a matching model",
        )


def _runtime(cfg: InferenceConfig, plan: DevicePlan, detector: Any, checkpoint: Path | None,
             sha256: str) -> tuple[str, Any]:
    """The backend that runs the network (``inference/runtime.py``) and, for onnxruntime, its network."""
    backend = resolve_backend(cfg.backend, plan.device.type)
    if backend != "onnxruntime":
        return backend, None
    network = onnx_network(detector, checkpoint, sha256, plan.num_threads)
    if network is None:
        return "torch", None
    if cfg.precision in ("int8", "auto"):  # auto: int8 when the model has calibration ranges
        quantized = int8_network(network, checkpoint, sha256, plan.num_threads)
        if quantized is not None:
            return "onnxruntime", quantized
        if cfg.precision == "int8":
            log.warning("inference.precision int8: %s has no int8 calibration (make one with `wsi model quantize "
                        "%s <training patches>`); detecting in fp32", checkpoint.name, checkpoint)
    return "onnxruntime", network


def _path_of(meta: Mapping[str, Any]) -> Path | None:
    """The checkpoint file of a loaded model (``load_checkpoint`` records it), if it still exists."""
    path = meta.get("path")
    return Path(path) if path and Path(path).is_file() else None


def cpu_streams(cfg: InferenceConfig, threads: int) -> int:
    """onnxruntime sessions on the CPU: ``inference.cpu_streams``, or 2 when there are at least 2 threads (two
    one-thread sessions taking alternate batches detected 1.3x faster than one two-thread session on 2 cores:
    the network of one overlaps the other's reading and post-processing; docs/inference.md)."""
    return max(1, min(cfg.cpu_streams or 2, threads))


def _run_batches(store: PatchSource, detector: Predictor, batches: list[tuple[int, int]], partial: PartialResults,
                 plan: DevicePlan, cfg: InferenceConfig, num_classes: int, progress: bool, network: Any = None) -> float:
    """Predict every batch and save its level-0 boxes; returns seconds spent waiting for data.
    ``network``: an exported runtime replacing the detector's own network (None: the detector as it is)."""
    streams = cpu_streams(cfg, plan.num_threads) if network is not None and plan.device.type == "cpu" else 1
    if streams > 1:
        return _run_batches_in_streams(store, detector, batches, partial, plan, cfg, num_classes, progress, network,
                                       streams)
    on_gpu = plan.device.type == "cuda"
    total = sum(stop - start for start, stop in batches)
    with PrefetchReader(store.patches, batches, cfg.prefetch_batches, pin_memory=on_gpu) as reader, \
            progress_bar(total=total, unit="patch", desc="detecting", disable=not progress) as bar, torch.inference_mode():
        for batch in reader:
            outputs = _predict(detector, batch.images.to(plan.device, non_blocking=True), plan, cfg, network)
            raw = _batch_to_level0(outputs, batch.start, store, num_classes)
            partial.save(batch.start, batch.stop, raw)
            bar.update(batch.stop - batch.start)
        return reader.wait_seconds


def _run_batches_in_streams(store: PatchSource, detector: Predictor, batches: list[tuple[int, int]],
                            partial: PartialResults, plan: DevicePlan, cfg: InferenceConfig, num_classes: int,
                            progress: bool, network: Any, streams: int) -> float:
    """:func:`_run_batches` with ``streams`` onnxruntime sessions of ``threads // streams`` threads each, run by as
    many worker threads (onnxruntime and torch release the GIL); results are saved in batch order."""
    threads = max(1, plan.num_threads // streams)
    free = [network.with_threads(threads) for _ in range(streams)]
    lock = threading.Lock()

    def predict(images: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        with lock:
            session = free.pop()
        try:
            with torch.inference_mode():
                return _predict(detector, images, plan, cfg, session)
        finally:
            with lock:
                free.append(session)

    total = sum(stop - start for start, stop in batches)
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(threads)  # the torch steps of each stream, beside the other streams' sessions
    try:
        with PrefetchReader(store.patches, batches, cfg.prefetch_batches) as reader, \
                progress_bar(total=total, unit="patch", desc="detecting", disable=not progress) as bar, \
                ThreadPoolExecutor(streams) as pool:
            pending: list[tuple[Any, Any]] = []

            def save_first() -> None:
                batch, future = pending.pop(0)
                partial.save(batch.start, batch.stop, _batch_to_level0(future.result(), batch.start, store, num_classes))
                bar.update(batch.stop - batch.start)

            for batch in reader:
                pending.append((batch, pool.submit(predict, batch.images)))
                while len(pending) > streams or (pending and pending[0][1].done()):
                    save_first()
            while pending:
                save_first()
            return reader.wait_seconds
    finally:
        torch.set_num_threads(torch_threads)


def _predict(detector: Predictor, images: torch.Tensor, plan: DevicePlan, cfg: InferenceConfig,
             network: Any) -> list[dict[str, torch.Tensor]]:
    """Detections of one stored batch, in passes of ``plan.batch_size`` (a stored chunk may hold more tiles)."""
    extra = {"network": network} if network is not None else {}
    outputs: list[dict[str, torch.Tensor]] = []
    for first in range(0, len(images), plan.batch_size):
        with plan.autocast():
            outputs += detector.predict(images[first:first + plan.batch_size], score_threshold=cfg.score_threshold,
                                        **extra)
    return outputs


def _batch_to_level0(outputs: list[dict[str, torch.Tensor]], start: int, store: PatchSource, num_classes: int) -> RawDetections:
    parts = []
    for offset, out in enumerate(outputs):
        boxes = out["boxes"].detach().float().cpu().numpy().reshape(-1, 4)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])  # drop degenerate boxes
        boxes = boxes[keep]
        index = start + offset
        class_scores = out["class_scores"].detach().float().cpu().numpy().reshape(-1, num_classes)[keep]
        parts.append(RawDetections(
            boxes=to_level0(boxes, store.coords[index], store.scale),
            scores=out["scores"].detach().float().cpu().numpy().reshape(-1)[keep].astype(np.float32),
            labels=out["labels"].detach().cpu().numpy().reshape(-1)[keep].astype(np.int64),
            class_scores=class_scores.astype(np.float32),
            patch_index=np.full(len(boxes), index, np.int64),
            truncated=touches_patch_border(boxes, store.patch_size, BORDER_TOLERANCE_PX),
        ))
    return RawDetections.concat(parts, num_classes)


def _merge(raw: RawDetections, store: PatchSource, cfg: InferenceConfig) -> RawDetections:
    keep = merge_overlaps(
        raw.boxes, raw.scores, raw.labels, raw.truncated, raw.patch_index,
        iou_threshold=cfg.nms_iou, ios_threshold=cfg.cut_cell_ios,
        block_size=store.patch_size * store.scale,
    )
    return raw.take(keep)


def _to_table(raw: RawDetections, taxonomy: list[str]) -> Detections:
    return Detections(
        boxes=raw.boxes.astype(np.float32),
        scores=raw.scores.astype(np.float32),
        labels=raw.labels.astype(np.int16),
        patch_index=raw.patch_index.astype(np.int32),
        class_scores=raw.class_scores.astype(np.float32),
        class_names=[taxonomy[int(i)] for i in raw.labels],
    )


def _metadata(store: PatchSource, meta: ModelMeta, model_path: Path | None, plan: DevicePlan, cfg: InferenceConfig,
              taxonomy: list[str], identity: dict[str, Any], seconds: float, backend: str = "torch") -> DetectionsMeta:
    return DetectionsMeta(
        complete=True,
        taxonomy=taxonomy,
        slide=store.slide_info,
        store=store_record(store),
        model=meta.record(model_path, identity["model_sha256"]),
        inference=InferenceRecord(
            device=plan.device.type, precision=plan.precision, batch_size=plan.batch_size,
            seconds=round(seconds, 3), score_threshold=cfg.score_threshold, nms_iou=cfg.nms_iou,
            cut_cell_ios=cfg.cut_cell_ios, software=f"wsi_pipeline {__version__}", backend=backend,
        ),
        identity=identity,
    )


def _finished_before(path: Path, identity: dict[str, Any], cfg: InferenceConfig) -> bool:
    if not path.is_file():
        return False
    try:
        meta = read_detections(path).meta
    except WsiError:
        return False
    inference = meta.inference or InferenceRecord()
    return (meta.identity == identity and inference.nms_iou == cfg.nms_iou
            and inference.cut_cell_ios == cfg.cut_cell_ios)


def _is_loaded(model: Any) -> bool:
    return hasattr(model, "detector") and hasattr(model, "meta")


def load_model(path: Path, device: torch.device | str = "cpu") -> ModelLike:
    """Build the detector of checkpoint ``path`` (once; ``detect_store`` takes the result), one-line errors."""
    from ..models.checkpoint import load_checkpoint

    if not path.is_file():
        raise ArtifactError(path, "model checkpoint not found (train one with `wsi train`)")
    try:
        return load_checkpoint(path, device)
    except WsiError:
        raise
    except Exception as exc:  # a foreign or damaged file: say so in one line
        raise ArtifactError(path, f"not a usable wsi_pipeline checkpoint ({exc.__class__.__name__})") from None


def _model_sha256(meta: ModelMeta, path: Path | None) -> str:
    if meta.sha256:
        return str(meta.sha256)
    if path is None:
        return ""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()

