"""Where and how the detector runs: device, precision, batch size and CPU threads.

* Device and precision follow the policy shared with training (``wsi_pipeline.device``).
* Batch size 0 means: on the CPU 4 tiles of 256 px, fewer of larger tiles (one 1024 px tile; larger
  batches only add latency on a few cores, measured in benchmarks/cpu_tiles.py), and on a GPU as many
  patches as fit into half of the free memory by a conservative per-patch estimate, at most 64.

Example:
    >>> plan = plan_device("cpu", "auto", batch_size=0, patch_size=256, num_threads=1)
    >>> plan.device.type, plan.precision, plan.batch_size
    ('cpu', 'fp32', 4)
    >>> plan_device("cpu", "auto", batch_size=0, patch_size=1024, num_threads=1).batch_size
    1
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch

from ..device import autocast, resolve_device, resolve_precision
from ..errors import ConfigError

CPU_BATCH = 4  # tiles of CPU_BATCH_TILE px per forward pass on the CPU; scaled down by tile area
CPU_BATCH_TILE = 256
MAX_GPU_BATCH = 64
# activation memory per 512 px patch for a ResNet-50 FPN one-stage detector at inference, with margin
GPU_BYTES_PER_512_PATCH = {"fp32": 600e6, "fp16": 320e6, "bf16": 320e6}


@dataclass(frozen=True)
class DevicePlan:
    device: torch.device
    precision: str  # fp32 | fp16 | bf16 (int8 once the engine runs an int8 network)
    batch_size: int
    num_threads: int  # torch intra-op threads on the CPU (0 on GPU: left alone)

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast context for the forward pass (a no-op at fp32)."""
        return autocast(self.device, self.precision)


def auto_batch_size(device: torch.device, precision: str, patch_size: int) -> int:
    """Patches per forward pass when the config says 0 (see the module docstring)."""
    if device.type == "cpu":
        return max(1, int(CPU_BATCH * (CPU_BATCH_TILE / patch_size) ** 2))
    free, _total = torch.cuda.mem_get_info(device)
    per_patch = GPU_BYTES_PER_512_PATCH[precision] * (patch_size / 512) ** 2
    return int(max(1, min(MAX_GPU_BATCH, (0.5 * free) // per_patch)))


def plan_device(device: str, precision: str, batch_size: int, patch_size: int, num_threads: int = 0) -> DevicePlan:
    """Resolve the inference settings; on the CPU this also sets torch's thread count."""
    dev = resolve_device(device, "inference.device")
    if precision == "int8":  # the int8 network is an onnxruntime export; torch's own work stays fp32
        if dev.type != "cpu":
            raise ConfigError(None, "inference.precision int8 runs on the CPU (onnxruntime); on a GPU use auto, fp16 or bf16")
        precision = "fp32"
    prec = resolve_precision(precision, dev, "inference.precision")
    if batch_size < 0:
        raise ConfigError(None, f"inference.batch_size must be >= 0, got {batch_size}")
    batch = batch_size or auto_batch_size(dev, prec, patch_size)
    threads = 0
    if dev.type == "cpu":
        cores = os.cpu_count() or 1
        threads = max(1, min(num_threads or cores, cores))
        torch.set_num_threads(threads)
    return DevicePlan(dev, prec, batch, threads)
