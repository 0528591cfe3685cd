"""The training loop behind ``wsi train``: resumable, logged, mixed precision on CUDA.

Writes into the output folder::

    last.pt          checkpoint + training state after every epoch (``--resume`` continues from it)
    model.pt         the final model (no optimizer state), written last: its presence means done
    metrics.jsonl    one JSON line per logged step / epoch / evaluation / per-class loss statistics
    loss_stats.png   the loss's per-class statistics against iterations (losses that keep any)
    config.yaml      the resolved training config

Example:
    >>> from wsi_pipeline.config import load_train_config
    >>> cfg = load_train_config("configs/train_demo.yaml", {"train_data": "demo/dataset"})  # doctest: +SKIP
    >>> result = train(cfg)                                                               # doctest: +SKIP
    >>> result.model_path.name                                                            # doctest: +SKIP
    'model.pt'
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch.utils.data import DataLoader, RandomSampler

from ..config import TrainConfig, from_dict
from ..device import autocast_dtype, resolve_device, training_precision
from ..progress import progress_bar
from ..resolution import same_mpp
from ..errors import ArtifactError, ConfigError
from ..taxonomy import load_taxonomy
from .backbones import BACKBONES, backbone_entry
from .bundled import starter_model_path
from .checkpoint import load_checkpoint, read_checkpoint_file, save_checkpoint
from .data import CocoPatchDataset, ConcatPatchDataset, RepeatFactorSampler, check_classes, collate, repeat_factors
from .detector import FAMILIES, Detector, DetectorSpec, build_detector, count_parameters
from .evaluation import Evaluation, evaluate_detector
from .heads import FamilyParams
from .loss_stats import plot_loss_statistics
from .losses import LOSSES, build_loss

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    model_path: Path
    epochs: int
    seconds: float
    final_loss: float
    evaluation: Evaluation | None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def detector_spec(cfg: TrainConfig, num_classes: int) -> DetectorSpec:
    m = cfg.model
    entry = backbone_entry(m.backbone)
    frozen = bool(m.backbone_weights) if m.frozen_batchnorm is None else m.frozen_batchnorm
    return DetectorSpec(
        num_classes=num_classes, detector=m.detector, backbone=m.backbone, image_size=cfg.patch_size,
        fpn_channels=m.fpn_channels, prior_prob=m.prior_prob, trainable_backbone_layers=m.trainable_backbone_layers,
        frozen_batchnorm=frozen, image_mean=list(entry.image_mean), image_std=list(entry.image_std),
        head=family_params(cfg),
    )


def family_params(cfg: TrainConfig, source: str | Path | None = None) -> FamilyParams:
    """``model.head`` as the detector family's params dataclass, validated (one-line ConfigError).

    Example:
        >>> from wsi_pipeline.config import load_train_config
        >>> family_params(load_train_config(overrides={"model": {"detector": "fcos", "head": {"head_convs": 2}}}))
        FCOSParams(center_sampling_radius=1.5, head_convs=2)
        >>> family_params(load_train_config(overrides={"model": {"detector": "fcos", "head": {"anchor_sizes": [8]}}}))
        Traceback (most recent call last):
        ...
        wsi_pipeline.errors.ConfigError: unknown key 'model.head.anchor_sizes' (known: center_sampling_radius, head_convs)
    """
    where = None if source is None else str(source)
    params = from_dict(FAMILIES[cfg.model.detector].params, cfg.model.head, "model.head", where)
    try:
        params.validate()
    except ValueError as exc:
        raise ConfigError(source, f"model.head.{exc}") from None
    return params


def lr_factor(it: int, total: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine / step / constant, as a multiple of ``schedule.lr``."""
    s = cfg.schedule
    warm = min(1.0, (it + 1) / s.warmup_iters) if s.warmup_iters > 0 else 1.0
    progress = it / max(1, total)
    if s.lr_schedule == "cosine":
        main = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        main = 0.01 + 0.99 * main
    elif s.lr_schedule == "step":
        main = 0.1 ** sum(progress >= f for f in s.lr_steps)
    else:
        main = 1.0
    return warm * main


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD or AdamW; biases and norm weights are exempt from weight decay unless
    ``schedule.decay_bias_and_norm`` (the official EFL recipe decays every parameter)."""
    s = cfg.schedule
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            exempt = (p.ndim <= 1 or name.endswith(".bias")) and not s.decay_bias_and_norm
            (no_decay if exempt else decay).append(p)
    groups = [{"params": decay, "weight_decay": s.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if s.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=s.lr)
    return torch.optim.SGD(groups, lr=s.lr, momentum=s.momentum)


def scaled_backward(loss: torch.Tensor, scaler: torch.amp.GradScaler, criterion: torch.nn.Module) -> None:
    """``scaler.scale(loss).backward()``, telling the loss's gradient hooks the loss scale first.

    Under fp16 the backward pass carries gradients multiplied by ``scaler.get_scale()``; losses
    that accumulate gradient statistics in a backward hook (EFL, Grad-Libra) divide by their
    ``grad_scale`` so the statistics are those of the unscaled loss.
    """
    if hasattr(criterion, "grad_scale"):
        criterion.grad_scale = float(scaler.get_scale()) if scaler.is_enabled() else 1.0
    scaler.scale(loss).backward()


class MetricsLog:
    """Append-only JSON lines; a lab technician can read the console log, tools read this."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, **record: Any) -> None:
        with self.path.open("a") as fh:
            fh.write(json.dumps(record, default=float) + "\n")


def check_registry_names(cfg: TrainConfig, source: str | Path | None = None) -> None:
    """The config's detector family, backbone and loss must be registered, and ``model.head`` must be
    valid params of that family (one-line ConfigError).

    Example:
        >>> from wsi_pipeline.config import load_train_config
        >>> check_registry_names(load_train_config(overrides={"model": {"backbone": "vgg"}}))
        Traceback (most recent call last):
        ...
        wsi_pipeline.errors.ConfigError: model.backbone must be one of resnet18, resnet34, resnet50, efficientnet_lite0
    """
    checks = [
        (cfg.model.detector in FAMILIES, f"model.detector must be one of {', '.join(FAMILIES)}"),
        (cfg.model.backbone in BACKBONES, f"model.backbone must be one of {', '.join(BACKBONES)}"),
        (cfg.loss.name in LOSSES, f"loss.name must be one of {', '.join(LOSSES)}"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(source, message)
    family_params(cfg, source)


def train(cfg: TrainConfig, out_dir: str | Path | None = None, resume: bool = False, progress: bool = True) -> TrainResult:
    """Train a detector as ``cfg`` says; returns where the final model is."""
    check_registry_names(cfg)
    out = Path(out_dir or cfg.out)
    if not cfg.train_data:
        raise ConfigError(None, "no training data: set train_data in the config or pass --data")
    device = resolve_device(cfg.device)
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    taxonomy = load_taxonomy(cfg.taxonomy or None)
    roots = train_roots(cfg)
    parts = [CocoPatchDataset(root, augment=cfg.augment) for root in roots]
    for part in parts:
        check_classes(part.info.class_names, taxonomy.names, part.root / "annotations.json")
        _check_dataset_geometry(part, cfg)
    dataset = parts[0] if len(parts) == 1 else ConcatPatchDataset(parts)
    val_set = None
    if cfg.val_data:
        val_set = CocoPatchDataset(cfg.val_data)
        check_classes(val_set.info.class_names, taxonomy.names, Path(cfg.val_data) / "annotations.json")
    if len(dataset) == 0:
        raise ArtifactError(", ".join(str(r) for r in roots), "dataset has no images")

    seed_everything(cfg.seed)
    num_classes = len(taxonomy)
    criterion = build_loss(cfg.loss.name, num_classes, cfg.loss.params)
    detector = build_detector(detector_spec(cfg, num_classes), criterion, cfg.model.backbone_weights or None)
    detector.to(device)
    optimizer = build_optimizer(detector, cfg)
    amp_dtype = autocast_dtype(training_precision(cfg.precision, device))
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)

    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    metrics = MetricsLog(out / "metrics.jsonl")
    start_epoch, it = 0, 0
    last = out / "last.pt"
    if resume:
        start_epoch, it = _restore(last, detector, optimizer, scaler, device)
        log.info("Resuming from %s after epoch %d", last, start_epoch)
    elif (out / "model.pt").exists() or last.exists():
        raise ArtifactError(out, "already holds a training run; pass --resume to continue it or choose another --out")
    elif cfg.init_weights:
        source = initialise_from_checkpoint(detector, cfg.init_weights, taxonomy.names)
        log.info("Fine-tuning: every weight starts from %s", source)

    if cfg.repeat_factor_threshold > 0:
        factors = repeat_factors([dataset.image_labels(i) for i in range(len(dataset))], cfg.repeat_factor_threshold)
        sampler: Any = RepeatFactorSampler(factors, seed=cfg.seed)
        log.info("Repeat-factor sampling (t=%g): %.0f images per epoch instead of %d", cfg.repeat_factor_threshold,
                 factors.sum(), len(dataset))
    else:
        sampler = None
    s = cfg.schedule
    batches_per_epoch = max(1, math.ceil((len(sampler) if sampler is not None else len(dataset)) / s.batch_size))
    if s.max_iters_per_epoch > 0:
        batches_per_epoch = min(batches_per_epoch, s.max_iters_per_epoch)
    total_iters = batches_per_epoch * s.epochs
    log.info("Training %s/%s with %s loss on %d patches (%d classes) for %d epochs of %d batches on %s%s; %.1fM parameters",
             cfg.model.detector, cfg.model.backbone, cfg.loss.name, len(dataset), num_classes, s.epochs,
             batches_per_epoch, device, f" ({amp_dtype})" if amp_dtype else "", count_parameters(detector) / 1e6)

    started = time.perf_counter()
    evaluation: Evaluation | None = None
    running = float("nan")
    for epoch in range(start_epoch, s.epochs):
        seed_everything(cfg.seed * 1000 + epoch)  # same batches whether resumed or not
        dataset.set_augmentation_seed(cfg.seed * 1000 + epoch)
        if sampler is not None:
            sampler.set_epoch(epoch)
            epoch_sampler = sampler
        else:
            epoch_sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(cfg.seed * 1000 + epoch))
        loader = DataLoader(dataset, batch_size=s.batch_size, sampler=epoch_sampler, collate_fn=collate,
                            num_workers=s.workers, drop_last=False, pin_memory=device.type == "cuda")
        detector.train()
        bar = progress_bar(total=batches_per_epoch, desc=f"epoch {epoch + 1}/{s.epochs}", unit="batch", disable=not progress)
        sums: dict[str, float] = {}
        n = 0
        for images, targets in loader:
            if n >= batches_per_epoch:
                break
            for group in optimizer.param_groups:
                group["lr"] = s.lr * lr_factor(it, total_iters, cfg)
            images = _images_to_device(images, device)
            targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
            ctx = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else nullcontext()
            with ctx:
                losses = detector(images, targets)
            loss = sum(losses.values())
            if not torch.isfinite(loss):
                raise ArtifactError(out, f"training diverged (loss {float(loss)} at iteration {it}); lower schedule.lr")
            optimizer.zero_grad(set_to_none=True)
            scaled_backward(loss, scaler, detector.criterion)
            if s.grad_clip > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(detector.parameters(), s.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            value = float(loss.detach())
            running = value if math.isnan(running) else 0.9 * running + 0.1 * value
            n += 1
            it += 1
            bar.set_postfix_str(f"loss {running:.3f}")
            bar.update(1)
            if it % 20 == 0:
                metrics.write(kind="step", epoch=epoch + 1, iter=it, lr=optimizer.param_groups[0]["lr"],
                              loss=value, **{k: float(v.detach()) for k, v in losses.items()})
            stats_every = cfg.log_loss_stats_every
            if stats_every > 0 and it % stats_every == 0 and (stats := _loss_statistics(detector)):
                metrics.write(kind="loss_stats", epoch=epoch + 1, iter=it, **stats)
        bar.close()
        epoch_losses = {k: v / max(1, n) for k, v in sums.items()}
        metrics.write(kind="epoch", epoch=epoch + 1, iter=it, seconds=time.perf_counter() - started, **epoch_losses,
                      **_loss_statistics(detector))
        log.info("Epoch %d/%d done: mean loss %.3f (%s)", epoch + 1, s.epochs, sum(epoch_losses.values()),
                 ", ".join(f"{k} {v:.3f}" for k, v in epoch_losses.items()))
        if val_set is not None:
            evaluation = evaluate_detector(detector, val_set, taxonomy.abnormal_names(), progress=progress)
            metrics.write(kind="eval", epoch=epoch + 1, **evaluation.to_dict())
            log.info("Validation after epoch %d: mAP %.3f, rare-class mAP %s", epoch + 1, evaluation.map50_95,
                     "n/a" if evaluation.rare_map is None else f"{evaluation.rare_map:.3f}")
        _save(last, detector, cfg, taxonomy, dataset, epoch + 1, it, evaluation, optimizer, scaler)

    model_path = _save(out / "model.pt", detector, cfg, taxonomy, dataset, s.epochs, it, evaluation, None, None)
    if _loss_statistics(detector):
        metrics.write(kind="loss_stats", epoch=s.epochs, iter=it, **_loss_statistics(detector))
        plot = plot_loss_statistics(metrics.path, out / "loss_stats.png", taxonomy.names)
        if plot is not None:
            log.info("Per-class loss statistics plotted in %s", plot)
    seconds = time.perf_counter() - started
    log.info("Model written to %s (%.0f s)", model_path, seconds)
    return TrainResult(model_path, s.epochs, seconds, running, evaluation)


def _images_to_device(images: torch.Tensor | list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """:func:`collate`'s uint8 images -> float ``(3, H, W)`` images on ``device``, converted there."""
    if isinstance(images, torch.Tensor):
        return list(Detector.as_float_images(images.to(device, non_blocking=True)))
    return [Detector.as_float_images(img[None].to(device, non_blocking=True))[0] for img in images]


def train_roots(cfg: TrainConfig) -> list[Path]:
    """The training dataset folders: ``train_data`` as one folder or a list.

    Example:
        >>> from wsi_pipeline.config import load_train_config
        >>> train_roots(load_train_config(overrides={"train_data": ["data/lab", "data/starter/train"]}))
        [PosixPath('data/lab'), PosixPath('data/starter/train')]
    """
    return [Path(r) for r in ([cfg.train_data] if isinstance(cfg.train_data, str) else cfg.train_data)]


def _check_dataset_geometry(dataset: CocoPatchDataset, cfg: TrainConfig) -> None:
    where = dataset.root / "annotations.json"
    info = dataset.info
    if info.target_mpp is not None and not same_mpp(cfg.target_mpp, info.target_mpp):
        raise ConfigError(where, f"dataset is at {info.target_mpp} um/px but the config says target_mpp {cfg.target_mpp}")
    if info.patch_size is not None and info.patch_size != cfg.patch_size:
        raise ConfigError(where, f"dataset patches are {info.patch_size} px but the config says patch_size {cfg.patch_size}")


def _loss_statistics(detector: Detector) -> dict[str, Any]:
    """The loss's per-class statistics (``pos_neg``, and ``beta`` where it has one); {} for BCE / focal."""
    criterion = detector.criterion
    return criterion.log_statistics() if hasattr(criterion, "log_statistics") else {}


def _save(path: Path, detector: Detector, cfg: TrainConfig, taxonomy, dataset: CocoPatchDataset, epoch: int, it: int,
          evaluation: Evaluation | None, optimizer, scaler) -> Path:
    training = {
        "dataset": ", ".join(str(r) for r in train_roots(cfg)), "num_images": len(dataset), "epochs": epoch, "iterations": it,
        "config": cfg.to_dict(), "metrics": evaluation.to_dict() if evaluation else {},
    }
    state = None
    if optimizer is not None:
        state = {
            "epoch": epoch, "iteration": it, "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
            "torch_rng": torch.get_rng_state(),
        }
    return save_checkpoint(
        path, detector, class_names=taxonomy.names, target_mpp=cfg.target_mpp, patch_size=cfg.patch_size,
        loss_name=cfg.loss.name, loss_params=cfg.loss.params, taxonomy=taxonomy.to_dict(), training=training,
        training_state=state,
    )


def initialise_from_checkpoint(detector: Detector, init_weights: str | Path, class_names: list[str]) -> Path:
    """Copy every network weight of a trained detector into ``detector`` (fine-tuning).

    ``init_weights`` is ``starter`` (the bundled starter model) or a checkpoint path. The checkpoint
    must have the same classes and the same network layout (backbone, FPN width, head); the
    classification loss may differ: its statistics (EFL, Grad-Libra) start afresh.
    """
    path = starter_model_path() if str(init_weights) == "starter" else Path(init_weights)
    payload = read_checkpoint_file(path)
    names = payload["meta"].get("taxonomy")
    if names != list(class_names):
        raise ArtifactError(path, f"checkpoint classes {names} differ from the taxonomy's {list(class_names)}")
    criterion_prefix = "model.head.classification_head.criterion."
    weights = {k: v for k, v in payload["model"].items() if not k.startswith(criterion_prefix)}
    own = {k: v for k, v in detector.state_dict().items() if not k.startswith(criterion_prefix)}
    missing, extra = sorted(set(own) - set(weights)), sorted(set(weights) - set(own))
    wrong = sorted(k for k in own.keys() & weights.keys() if own[k].shape != weights[k].shape)
    if missing or extra or wrong:
        first = (missing or extra or wrong)[0]
        raise ArtifactError(path, f"checkpoint network differs from the config's model section (first differing weight: "
                                  f"{first}); set model.* and model.head as in the checkpoint (wsi model info {path.name})")
    detector.load_state_dict({k: v.to(own[k].dtype) for k, v in weights.items()}, strict=False)
    return path


def _restore(path: Path, detector: Detector, optimizer, scaler, device: torch.device) -> tuple[int, int]:
    if not path.exists():
        raise ArtifactError(path, "nothing to resume: no last.pt in the output folder")
    loaded = load_checkpoint(path, device)
    if loaded.training_state is None:
        raise ArtifactError(path, "checkpoint has no training state to resume from")
    if loaded.detector.spec != detector.spec:
        raise ArtifactError(path, "checkpoint architecture differs from the config; resume with the same config")
    detector.load_state_dict(loaded.detector.state_dict())
    optimizer.load_state_dict(loaded.training_state["optimizer"])
    scaler.load_state_dict(loaded.training_state["scaler"])
    torch.set_rng_state(loaded.training_state["torch_rng"])
    return int(loaded.training_state["epoch"]), int(loaded.training_state["iteration"])
