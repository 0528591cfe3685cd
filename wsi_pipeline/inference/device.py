"""Where and how the detector runs: device, precision, batch size and CPU threads.

* ``auto`` picks the first CUDA GPU when there is one, else the CPU.
* Precision ``auto`` is bf16 autocast on GPUs that support it (fp16 otherwise) and fp32 on the
  CPU: bf16 on a CPU without bf16 instructions is 5-8x slower (docs/inference.md).
* Batch size 0 means: 4 on the CPU (more only adds latency on a few cores), and on a GPU as many
  patches as fit into half of the free memory by a conservative per-patch estimate, at most 64.

Example:
    >>> plan = plan_device("cpu", "auto", batch_size=0, patch_size=512, num_threads=1)
    >>> plan.device.type, plan.precision, plan.batch_size
    ('cpu', 'fp32', 4)
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch

from ..errors import ConfigError

CPU_BATCH = 4
MAX_GPU_BATCH = 64
# activation memory per 512 px patch for a ResNet-50 FPN one-stage detector at inference, with margin
GPU_BYTES_PER_512_PATCH = {"fp32": 600e6, "fp16": 320e6, "bf16": 320e6}
_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class DevicePlan:
    device: torch.device
    precision: str  # fp32 | fp16 | bf16
    batch_size: int
    num_threads: int  # torch intra-op threads on the CPU (0 on GPU: left alone)

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast context for the forward pass (a no-op at fp32)."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=_DTYPES[self.precision])


def resolve_device(name: str) -> torch.device:
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` -> a usable torch device, or a ConfigError."""
    if name == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(None, f"inference.device: unknown device {name!r} (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(None, f"inference.device is {name!r} but no CUDA GPU is available; use --device cpu")
        index = device.index or 0
        if index >= torch.cuda.device_count():
            raise ConfigError(None, f"inference.device {name!r}: only {torch.cuda.device_count()} GPU(s) present")
        return torch.device("cuda", index)
    if device.type != "cpu":
        raise ConfigError(None, f"inference.device: unsupported device {name!r} (use auto, cpu, cuda or cuda:N)")
    return device


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision not in ("auto", "fp32", "fp16", "bf16"):
        raise ConfigError(None, f"inference.precision must be auto, fp32, fp16 or bf16, got {precision!r}")
    if precision == "auto":
        if device.type == "cpu":
            return "fp32"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu" and precision == "fp16":
        raise ConfigError(None, "inference.precision fp16 needs a GPU; use fp32 (or bf16) on the CPU")
    return precision


def auto_batch_size(device: torch.device, precision: str, patch_size: int) -> int:
    """Patches per forward pass when the config says 0 (see the module docstring)."""
    if device.type == "cpu":
        return CPU_BATCH
    free, _total = torch.cuda.mem_get_info(device)
    per_patch = GPU_BYTES_PER_512_PATCH[precision] * (patch_size / 512) ** 2
    return int(max(1, min(MAX_GPU_BATCH, (0.5 * free) // per_patch)))


def plan_device(device: str, precision: str, batch_size: int, patch_size: int, num_threads: int = 0) -> DevicePlan:
    """Resolve the inference settings; on the CPU this also sets torch's thread count."""
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    if batch_size < 0:
        raise ConfigError(None, f"inference.batch_size must be >= 0, got {batch_size}")
    batch = batch_size or auto_batch_size(dev, prec, patch_size)
    threads = 0
    if dev.type == "cpu":
        cores = os.cpu_count() or 1
        threads = max(1, min(num_threads or cores, cores))
        torch.set_num_threads(threads)
    return DevicePlan(dev, prec, batch, threads)
