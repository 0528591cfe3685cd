"""Device and precision policy, shared by training and inference (one place for both).

* Device ``auto`` is the first CUDA GPU when there is one, else the CPU; ``cuda`` means ``cuda:0``.
* Precision ``auto`` is bf16 autocast on GPUs that support it (fp16 otherwise) and fp32 on the CPU:
  bf16 on a CPU without bf16 instructions is 5-8x slower (docs/inference.md).
* Inference may run bf16 on the CPU when asked; training always trains in fp32 on the CPU
  (:func:`training_precision`).

Example:
    >>> resolve_device("cpu"), resolve_precision("auto", torch.device("cpu")), autocast_dtype("fp32")
    (device(type='cpu'), 'fp32', None)
    >>> training_precision("bf16", torch.device("cpu"))
    'fp32'
"""

from __future__ import annotations

import contextlib

import torch

from .errors import ConfigError

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(name: str, setting: str = "device") -> torch.device:
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` -> a usable torch device, or a ConfigError naming ``setting``."""
    if name == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(None, f"{setting}: unknown device {name!r} (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(None, f"{setting} is {name!r} but no CUDA GPU is available; use --device cpu")
        index = device.index or 0
        if index >= torch.cuda.device_count():
            raise ConfigError(None, f"{setting} {name!r}: only {torch.cuda.device_count()} GPU(s) present")
        return torch.device("cuda", index)
    if device.type != "cpu":
        raise ConfigError(None, f"{setting}: unsupported device {name!r} (use auto, cpu, cuda or cuda:N)")
    return device


def resolve_precision(precision: str, device: torch.device, setting: str = "precision") -> str:
    """``auto`` | ``fp32`` | ``fp16`` | ``bf16`` -> the precision to run at on ``device`` (never ``auto``)."""
    if precision not in PRECISIONS:
        raise ConfigError(None, f"{setting} must be auto, fp32, fp16 or bf16, got {precision!r}")
    if precision == "auto":
        if device.type == "cpu":
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu" and precision == "fp16":
        raise ConfigError(None, f"{setting} fp16 needs a GPU; use fp32 (or bf16) on the CPU")
    return precision


def training_precision(precision: str, device: torch.device) -> str:
    """Training's rule: mixed precision only on CUDA; the CPU trains in fp32 whatever was asked."""
    return resolve_precision(precision, device, "train.precision") if device.type == "cuda" else "fp32"


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of a resolved precision (None at fp32)."""
    return _DTYPES.get(precision)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Autocast context for a forward pass at a resolved precision (a no-op at fp32)."""
    dtype = autocast_dtype(precision)
    return contextlib.nullcontext() if dtype is None else torch.autocast(device_type=device.type, dtype=dtype)
