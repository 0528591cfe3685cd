"""Pipeline configuration: plain YAML, validated here and nowhere else.

Each stage reads its own section (``tiling``, ``inference``, ``report``) of one YAML file; the
defaults live in ``configs/default.yaml`` and a user file only needs the keys it changes.

Example:
    >>> cfg = load_config()                      # the defaults
    >>> cfg.tiling.patch_size, cfg.tiling.target_mpp
    (256, 0.5)
    >>> cfg = load_config(overrides={"tiling": {"overlap": 64}})
    >>> cfg.tiling.overlap
    64
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError
from .resolution import DEFAULT_TARGET_MPP, PLAUSIBLE_MPP, plausible_mpp
from .taxonomy import CONFIG_DIR

DEFAULT_CONFIG = CONFIG_DIR / "default.yaml"


@dataclass
class MaskConfig:
    """Cell-area mask computed on a low-resolution thumbnail."""

    mpp: float = 8.0  # thumbnail resolution, um/px
    method: str = "otsu"  # otsu | fixed
    threshold: float = 0.0  # used with method=fixed: saturation/darkness threshold in [0, 1]
    dilate_um: float = 60.0  # grow the mask so cells at the edge of a blob are kept
    min_object_um2: float = 50.0  # drop specks smaller than this (dust)
    min_patch_fraction: float = 0.0  # keep a patch when this fraction of it is in the mask (0: any pixel)


@dataclass
class TilingConfig:
    target_mpp: float = DEFAULT_TARGET_MPP
    patch_size: int = 256  # inference tile side at target_mpp, independent of the model's training patch
    overlap: int = 128
    codec: str = "jpeg"  # jpeg | zstd | none
    jpeg_quality: int = 90
    patches_per_chunk: int = 16
    batch_patches: int = 64  # patches per Dask task
    scheduler: str = "processes"  # threads | processes | synchronous | tcp://host:port
    workers: int = 0  # 0: number of CPU cores
    mask: MaskConfig = field(default_factory=MaskConfig)


@dataclass
class InferenceConfig:
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    batch_size: int = 0  # 0: chosen from device memory
    # auto (bf16/fp16 on CUDA; on the CPU int8 when the model has an int8 calibration, else fp32) | fp32 | fp16 | bf16 | int8
    precision: str = "auto"
    score_threshold: float = 0.05  # detections kept in the table
    nms_iou: float = 0.5  # class-aware merge of duplicates across tile overlaps
    cut_cell_ios: float = 0.6  # a box cut by a patch border is dropped when this share lies inside a better box
    prefetch_batches: int = 2
    num_threads: int = 0  # CPU threads for torch or onnxruntime; 0: all cores
    # onnxruntime sessions sharing those threads, each taking every n-th batch (0: 2 when there are >= 2 threads)
    cpu_streams: int = 0
    # auto (onnxruntime on the CPU when installed, torch on a GPU) | torch | onnxruntime (docs/inference.md)
    backend: str = "auto"


# Bethesda 2014 minimum of well-preserved squamous cells for an adequate specimen, per preparation
PREPARATIONS = {"liquid_based": 5000, "conventional": 8000}


@dataclass
class ReportConfig:
    # a cell counts for a class when its score is at least this (per class, default for others)
    score_threshold: float = 0.5
    class_score_thresholds: dict[str, float] = field(default_factory=dict)
    # a slide category needs at least this many cells of the class above threshold
    min_cells: int = 2
    class_min_cells: dict[str, int] = field(default_factory=lambda: {"HSIL": 1, "SCC": 1, "AGC": 1})
    top_k: int = 12  # most suspicious cells shown per abnormal class
    suspicion_top_k: int = 10  # cells that make up the slide suspicion score
    preparation: str = "liquid_based"  # liquid_based (ThinPrep/SurePath/TCT) | conventional (smear): sets the adequacy minimum
    adequacy_min_squamous: int | None = None  # None: the Bethesda minimum for the preparation (5,000 / 8,000)
    crop_size_um: float = 64.0  # side of the gallery crops (grown to fit a larger cell)
    crop_format: str = "jpeg"  # jpeg | png (lossless, larger page)
    jpeg_quality: int = 90  # gallery crops when crop_format is jpeg
    thumbnail_max_px: int = 1600  # long side of the overview pictures in report.html
    heatmap_grid_um: float = 500.0  # side of the squares of the abnormal-cell density heat map
    morphometry: bool = True  # measure the nuclei of counted cells (area, ratio to NILM median, N/C)
    morphometry_nilm_sample: int = 500  # NILM cells measured for the slide's median (a fixed-seed sample above this)
    # processes measuring nuclei: 1 none (in the report's process), 0 one per core (up to 4), N that many.
    # More than 1 starts a "spawn" pool, so a Python script calling the report needs an `if __name__ == "__main__":` guard
    morphometry_workers: int = 1
    review_cells: int = 60  # cells on the review page: every counted abnormal cell, then the most suspicious others up to this


@dataclass
class PipelineConfig:
    tiling: TilingConfig = field(default_factory=TilingConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    taxonomy: str = ""  # path to a taxonomy YAML; empty: configs/taxonomy.yaml

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


T = typing.TypeVar("T")


def from_dict(cls: type[T], data: dict[str, Any] | None, where: str, source: str) -> T:
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys and wrong types."""
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError(source, f"'{where}' must be a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(source, f"unknown key '{where}.{unknown[0]}' (known: {', '.join(fields)})")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, f"{where}.{name}".lstrip("."), source)
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, where: str, source: str) -> Any:
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where, source)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            if arg is type(None) and value is None:
                return None
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        for arg in args[1:]:  # the first type's error is the one reported
            try:
                return _coerce(arg, value, where, source)
            except ConfigError:
                pass
        return _coerce(args[0], value, where, source)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(source, f"'{where}' must be a mapping")
        _, vt = typing.get_args(tp)
        return {str(k): _coerce(vt, v, f"{where}.{k}", source) for k, v in value.items()}
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(source, f"'{where}' must be a list")
        (it,) = typing.get_args(tp)
        return [_coerce(it, v, f"{where}[{i}]", source) for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(source, f"'{where}' must be true or false, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(source, f"'{where}' must be a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(source, f"'{where}' must be an integer, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(source, f"'{where}' must be a string, got {value!r}")
        return value
    return value


def merge(base: dict, extra: dict) -> dict:
    """``extra`` over ``base``, recursively for nested mappings."""
    out = dict(base)
    for k, v in extra.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, turning every failure into a one-line :class:`ConfigError`."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(path, "config file not found") from None
    except IsADirectoryError:
        raise ConfigError(path, "is a directory, expected a YAML file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(path, f"not valid YAML{at}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(path, "top level must be a mapping of sections")
    return data


def load_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> PipelineConfig:
    """Defaults from ``configs/default.yaml``, then ``path``, then ``overrides``; validated."""
    data = read_yaml(DEFAULT_CONFIG)
    source = str(DEFAULT_CONFIG)
    if path is not None:
        data = merge(data, read_yaml(path))
        source = str(path)
    if overrides:
        data = merge(data, overrides)
    cfg = from_dict(PipelineConfig, data, "", source)
    _check_ranges(cfg, source)
    _check_report(cfg.report, source)
    _check_classes(cfg, source)
    return cfg


def _check_classes(cfg: PipelineConfig, source: str) -> None:
    """The taxonomy file exists and the per-class report thresholds name its classes (before any work starts)."""
    from .taxonomy import load_taxonomy  # noqa: PLC0415

    check_report_classes(cfg.report, load_taxonomy(cfg.taxonomy or None).names, source)


def check_report_classes(report: ReportConfig, names: list[str], source: str | None) -> None:
    """The per-class report settings name classes of the taxonomy (``names``); a one-line error otherwise."""
    for key in ("class_score_thresholds", "class_min_cells"):
        unknown = sorted(set(getattr(report, key)) - set(names))
        if unknown:
            raise ConfigError(source, f"report.{key} names unknown class {unknown[0]!r} (known: {', '.join(names)})")


SCHEDULERS = ("threads", "processes", "synchronous", "distributed")
PRECISIONS = ("auto", "fp32", "fp16", "bf16", "int8")  # int8: CPU, onnxruntime, an export from `wsi model quantize`
BACKENDS = ("auto", "torch", "onnxruntime")
_CLUSTER_ADDRESS = re.compile(r"^(tcp|tls|inproc|ucx|ws|wss)://\S+$")
_DEVICE = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")


def check_scheduler(value: str, key: str = "tiling.scheduler", source: str | None = None) -> str:
    """A Dask scheduler name, or a ``tcp://HOST:PORT`` address of a running cluster.

    Example:
        >>> check_scheduler("tcp://10.0.0.5:8786")
        'tcp://10.0.0.5:8786'
        >>> check_scheduler("foo")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        wsi_pipeline.errors.ConfigError: tiling.scheduler must be threads, processes, synchronous, ...
    """
    if value in SCHEDULERS or _CLUSTER_ADDRESS.match(value or ""):
        return value
    raise ConfigError(source, f"{key} must be {', '.join(SCHEDULERS)} or a cluster address tcp://HOST:PORT, got {value!r}")


def check_device(value: str, key: str = "inference.device", source: str | None = None) -> str:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (whether that GPU exists is checked when the model loads)."""
    if _DEVICE.match(value or ""):
        return value
    raise ConfigError(source, f"{key} must be auto, cpu, cuda or cuda:N, got {value!r}")


def check_workers_mpp(workers: int | None, mpp: float | None) -> None:
    """``--workers`` and ``--mpp`` of ``wsi tile`` and ``wsi-run`` (None: not given)."""
    if workers is not None and workers < 0:
        raise ConfigError(None, f"--workers must be >= 0 (0: all cores), got {workers}")
    if mpp is not None and not plausible_mpp(mpp):
        raise ConfigError(None, f"--mpp must be between {PLAUSIBLE_MPP[0]:g} and {PLAUSIBLE_MPP[1]:g} um/px, got {mpp}")


def _check_ranges(cfg: PipelineConfig, source: str) -> None:
    t = cfg.tiling
    check_scheduler(t.scheduler, source=source)
    check_device(cfg.inference.device, source=source)
    m = t.mask
    checks = [
        (0.05 <= t.target_mpp <= 20, "tiling.target_mpp must be between 0.05 and 20 um/px"),
        (16 <= t.patch_size <= 8192, "tiling.patch_size must be between 16 and 8192 px"),
        (0 <= t.overlap < t.patch_size, "tiling.overlap must be >= 0 and smaller than patch_size"),
        (t.codec in ("jpeg", "zstd", "none"), f"tiling.codec must be jpeg, zstd or none, got {t.codec!r}"),
        (1 <= t.jpeg_quality <= 100, "tiling.jpeg_quality must be 1-100"),
        (t.patches_per_chunk >= 1 and t.batch_patches >= 1, "tiling chunk/batch sizes must be >= 1"),
        (t.workers >= 0, f"tiling.workers must be >= 0 (0: all cores), got {t.workers}"),
        (m.method in ("otsu", "fixed"), f"tiling.mask.method must be otsu or fixed, got {m.method!r}"),
        (0.05 <= m.mpp <= 100, f"tiling.mask.mpp must be between 0.05 and 100 um/px, got {m.mpp}"),
        (0 <= m.threshold <= 1, f"tiling.mask.threshold must be in [0, 1], got {m.threshold}"),
        (m.dilate_um >= 0 and m.min_object_um2 >= 0, "tiling.mask.dilate_um and tiling.mask.min_object_um2 must be >= 0"),
        (0 <= m.min_patch_fraction <= 1, f"tiling.mask.min_patch_fraction must be in [0, 1], got {m.min_patch_fraction}"),
        (cfg.inference.precision in PRECISIONS,
         f"inference.precision must be {', '.join(PRECISIONS)}, got {cfg.inference.precision!r}"),
        (cfg.inference.num_threads >= 0, f"inference.num_threads must be >= 0 (0: all cores), got {cfg.inference.num_threads}"),
        (cfg.inference.cpu_streams >= 0, f"inference.cpu_streams must be >= 0 (0: automatic), got {cfg.inference.cpu_streams}"),
        (cfg.inference.backend in BACKENDS,
         f"inference.backend must be {', '.join(BACKENDS)}, got {cfg.inference.backend!r}"),
        (not (cfg.inference.precision == "int8" and cfg.inference.backend == "torch"),
         "inference.precision int8 runs on onnxruntime: set inference.backend to auto or onnxruntime"),
        (0 <= cfg.inference.nms_iou <= 1, "inference.nms_iou must be in [0, 1]"),
        (0 < cfg.inference.cut_cell_ios <= 1, "inference.cut_cell_ios must be in (0, 1]"),
        (0 <= cfg.inference.score_threshold <= 1, "inference.score_threshold must be in [0, 1]"),
        (cfg.inference.batch_size >= 0 and cfg.inference.prefetch_batches >= 1,
         "inference.batch_size must be >= 0 and inference.prefetch_batches >= 1"),
        (0 <= cfg.report.score_threshold <= 1, "report.score_threshold must be in [0, 1]"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(source, message)


def _check_report(r: ReportConfig, source: str) -> None:
    """Ranges of the ``report`` section; class names are checked against the taxonomy by the report itself."""
    checks = [
        (all(0 <= v <= 1 for v in r.class_score_thresholds.values()), "report.class_score_thresholds must be in [0, 1]"),
        (r.min_cells >= 1 and all(v >= 1 for v in r.class_min_cells.values()), "report min_cells values must be >= 1"),
        (r.top_k >= 0 and r.suspicion_top_k >= 1, "report.top_k must be >= 0 and report.suspicion_top_k >= 1"),
        (r.preparation in PREPARATIONS, f"report.preparation must be one of {', '.join(PREPARATIONS)}, got {r.preparation!r}"),
        (r.adequacy_min_squamous is None or r.adequacy_min_squamous >= 0, "report.adequacy_min_squamous must be >= 0"),
        (1 <= r.crop_size_um <= 1000, "report.crop_size_um must be between 1 and 1000 um"),
        (r.crop_format in ("jpeg", "png"), "report.crop_format must be jpeg or png"),
        (1 <= r.jpeg_quality <= 100, "report.jpeg_quality must be 1-100"),
        (64 <= r.thumbnail_max_px <= 8192, "report.thumbnail_max_px must be between 64 and 8192"),
        (r.heatmap_grid_um > 0, "report.heatmap_grid_um must be > 0"),
        (r.morphometry_nilm_sample >= 1, "report.morphometry_nilm_sample must be >= 1"),
        (r.morphometry_workers >= 0, "report.morphometry_workers must be >= 0"),
        (r.review_cells >= 0, "report.review_cells must be >= 0"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(source, message)


# ---------------------------------------------------------------- training (wsi train / wsi evaluate)
# A training config is its own YAML file (configs/train_demo.yaml, configs/longtail.yaml); keys it
# leaves out take the defaults below.


@dataclass
class ModelConfig:
    detector: str = "retinanet"  # retinanet | fcos (models/families.py FAMILIES)
    backbone: str = "resnet18"  # resnet18 | resnet34 | resnet50 | efficientnet_lite0 (models/backbones.py)
    # initial backbone weights: "" (from scratch) | imagenet (bundled with an installed package, e.g.
    # EfficientNet-Lite0) | torchvision:<Weights enum> (downloads: needs network) | path to a state dict
    backbone_weights: str = ""
    frozen_batchnorm: bool | None = None  # None: frozen when starting from backbone_weights
    fpn_channels: int = 256
    trainable_backbone_layers: int = 5  # stages trained, from the top (5: all, 0: none)
    prior_prob: float = 0.01
    # the detector family's own settings, keys of its params dataclass (models/retinanet.py RetinaNetParams:
    # anchor_sizes, anchor_scales, aspect_ratios, fg_iou, bg_iou; models/fcos.py FCOSParams:
    # center_sampling_radius, head_convs); checked by models.training.check_registry_names; {}: defaults
    head: dict[str, Any] = field(default_factory=dict)


# family settings that sat directly under `model:` before they moved to `model.head`
MOVED_TO_MODEL_HEAD = ("anchor_sizes", "anchor_scales", "aspect_ratios", "fg_iou", "bg_iou",
                       "center_sampling_radius", "head_convs")


@dataclass
class LossConfig:
    name: str = "efl"  # focal | bce | eqlv2 | efl | gradlibra | gradlibra_v2
    params: dict[str, float] = field(default_factory=dict)


@dataclass
class AugmentConfig:
    enabled: bool = True
    flips: bool = True  # horizontal + vertical
    rotate90: bool = True
    hsv_shift: float = 0.05  # stain/colour jitter: hue shift as a fraction of the hue circle
    scale: float = 0.0  # +- relative zoom (0.15: 0.85-1.15x), for scanners' um/px differences
    shift: float = 0.0  # +- translation as a fraction of the patch (0.25: up to 64 px of 256), cells at every tile position
    brightness_contrast: float = 0.15
    blur_prob: float = 0.1
    jpeg_prob: float = 0.2
    jpeg_quality_min: int = 60
    # stain and illumination variation beyond hue jitter, for models meant to work on other labs' slides:
    stain_prob: float = 0.0  # albumentations HEStain: haematoxylin/eosin-like stain vectors and intensities
    illuminant_prob: float = 0.0  # albumentations PlanckianJitter: the lamp's colour temperature
    grayscale_prob: float = 0.0  # whole patch to grey, so that shape must carry the class


@dataclass
class ScheduleConfig:
    epochs: int = 12
    batch_size: int = 8
    optimizer: str = "sgd"  # sgd | adamw
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    # true: weight decay on every parameter, biases (the classification prior bias included) and
    # norm weights too, as in the official EFL recipe (configs/efl_official.yaml); false: those are exempt
    decay_bias_and_norm: bool = False
    warmup_iters: int = 100
    lr_schedule: str = "cosine"  # cosine | step | constant
    lr_steps: list[float] = field(default_factory=lambda: [0.67, 0.89])  # step: fractions of training
    grad_clip: float = 10.0  # max gradient norm; 0: off
    workers: int = 0  # DataLoader worker processes
    max_iters_per_epoch: int = 0  # 0: one pass over the (resampled) dataset


@dataclass
class TrainConfig:
    # COCO patch dataset folder (images/ + annotations.json), or a list of them trained on together
    # (e.g. your own annotations plus the starter model's composited set)
    train_data: str | list[str] = ""
    val_data: str = ""  # optional, evaluated after every epoch
    out: str = "runs/train"
    taxonomy: str = ""  # empty: configs/taxonomy.yaml
    target_mpp: float = DEFAULT_TARGET_MPP
    patch_size: int = 256
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (bf16/fp16 autocast on CUDA, fp32 on CPU) | fp32 | fp16 | bf16
    num_threads: int = 0  # torch CPU threads; 0: all cores
    log_loss_stats_every: int = 50  # per-class loss statistics (pos_neg / beta) into metrics.jsonl every N iterations; 0: off
    repeat_factor_threshold: float = 0.0  # LVIS repeat-factor sampling threshold t; 0: off
    # fine-tuning: start every weight (backbone, FPN, heads) from a detector checkpoint of the same
    # architecture and classes: "" (off) | starter (the bundled starter model) | path to a model.pt
    init_weights: str = ""
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_train_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """A training config: dataclass defaults, then the YAML file ``path``, then ``overrides``.

    Example:
        >>> cfg = load_train_config(overrides={"loss": {"name": "gradlibra"}, "schedule": {"epochs": 2}})
        >>> cfg.loss.name, cfg.schedule.epochs, cfg.model.backbone
        ('gradlibra', 2, 'resnet18')
    """
    data: dict[str, Any] = read_yaml(path) if path is not None else {}
    source = str(path) if path is not None else "<train config>"
    if overrides:
        data = merge(data, overrides)
    _check_moved_keys(data.get("model"), source)
    cfg = from_dict(TrainConfig, data, "", source)
    _check_train(cfg, source)
    return cfg


def _check_moved_keys(model: Any, source: str) -> None:
    """A config in the old layout (family settings directly under ``model:``) gets a one-line error saying
    where the key went, not a bare "unknown key"; it is not migrated silently, because which keys a family
    reads is the model registry's business (FCOS never read anchor_sizes that old configs gave it)."""
    if not isinstance(model, dict):
        return
    moved = [k for k in MOVED_TO_MODEL_HEAD if k in model]
    if moved:
        raise ConfigError(source, f"model.{moved[0]} is a detector-family setting now under model.head: write "
                                  f"'head: {{{moved[0]}: ...}}' in the model section (see docs/training.md)")


def _check_train(cfg: TrainConfig, source: str) -> None:
    """Ranges and forms. The names of detector families, backbones and losses, and the keys of ``model.head``,
    live in the model registries, so ``wsi_pipeline.models.training.check_registry_names`` checks them,
    before any training work."""
    m, s = cfg.model, cfg.schedule
    checks = [
        (m.backbone_weights in ("", "imagenet") or m.backbone_weights.startswith("torchvision:")
         or Path(m.backbone_weights).is_file(),
         f"model.backbone_weights must be '', imagenet, torchvision:<Weights> or an existing file, got {m.backbone_weights!r}"),
        (cfg.init_weights in ("", "starter") or Path(cfg.init_weights).is_file(),
         f"init_weights must be '', starter or an existing checkpoint file, got {cfg.init_weights!r}"),
        (0 <= m.trainable_backbone_layers <= 5, "model.trainable_backbone_layers must be 0-5"),
        (0 < m.prior_prob < 1, "model.prior_prob must be in (0, 1)"),
        (0.05 <= cfg.target_mpp <= 20, "target_mpp must be between 0.05 and 20 um/px"),
        (32 <= cfg.patch_size <= 4096, "patch_size must be between 32 and 4096 px"),
        (cfg.precision in ("auto", "fp32", "fp16", "bf16"), "precision must be auto, fp32, fp16 or bf16"),
        (cfg.repeat_factor_threshold >= 0, "repeat_factor_threshold must be >= 0"),
        (cfg.log_loss_stats_every >= 0, "log_loss_stats_every must be >= 0"),
        (s.weight_decay >= 0, "schedule.weight_decay must be >= 0"),
        (s.epochs >= 1 and s.batch_size >= 1, "schedule.epochs and schedule.batch_size must be >= 1"),
        (s.optimizer in ("sgd", "adamw"), "schedule.optimizer must be sgd or adamw"),
        (s.lr > 0, "schedule.lr must be > 0"),
        (s.lr_schedule in ("cosine", "step", "constant"), "schedule.lr_schedule must be cosine, step or constant"),
        (0 <= cfg.augment.jpeg_quality_min <= 100, "augment.jpeg_quality_min must be 0-100"),
        (0 <= cfg.augment.scale < 1, "augment.scale must be in [0, 1)"),
        (0 <= cfg.augment.shift <= 0.5, "augment.shift must be in [0, 0.5]"),
        (all(0 <= p <= 1 for p in (cfg.augment.blur_prob, cfg.augment.jpeg_prob, cfg.augment.stain_prob,
                                   cfg.augment.illuminant_prob, cfg.augment.grayscale_prob)),
         "augment.blur_prob, jpeg_prob, stain_prob, illuminant_prob and grayscale_prob must be in [0, 1]"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(source, message)
