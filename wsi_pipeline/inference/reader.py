"""Lazy, prefetching reads of patch batches from a zarr array while the model computes.

Batches are whole zarr chunks (a batch never splits a chunk, so no chunk is decoded twice).
A small thread pool reads and decodes the next ``prefetch`` batches in the background
(zarr/imagecodecs release the GIL while decoding); only ``prefetch + 1`` batches are ever in
memory, never the whole store.

Example:
    >>> import numpy as np
    >>> plan_batches(n_patches=10, chunk=4, batch_size=6, done=np.zeros(10, bool))
    [(0, 4), (4, 8), (8, 10)]
    >>> arr = np.arange(10 * 2 * 2 * 3, dtype=np.uint8).reshape(10, 2, 2, 3)
    >>> with PrefetchReader(arr, [(0, 4), (8, 10)], prefetch=2) as reader:
    ...     [(b.start, b.stop, tuple(b.images.shape)) for b in reader]
    [(0, 4, (4, 2, 2, 3)), (8, 10, (2, 2, 2, 3))]
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass
class PatchBatch:
    start: int  # first patch index (inclusive)
    stop: int  # last patch index (exclusive)
    images: torch.Tensor  # (B, H, W, 3) uint8, pinned when reading for a GPU
    wait_seconds: float  # how long the consumer waited for this batch (data starvation)


def plan_batches(n_patches: int, chunk: int, batch_size: int, done: np.ndarray) -> list[tuple[int, int]]:
    """Chunk-aligned ``(start, stop)`` ranges covering every patch not yet ``done``.

    A batch holds ``max(1, batch_size // chunk)`` chunks; a chunk with any unfinished patch is
    read whole (results are kept per batch, and a batch is always whole chunks).
    """
    chunks_per_batch = max(1, batch_size // chunk)
    pending = [c for c in range(0, n_patches, chunk) if not done[c:c + chunk].all()]
    batches: list[tuple[int, int]] = []
    run: list[int] = []
    for c in pending:  # group consecutive pending chunks
        if run and (c != run[-1] + chunk or len(run) == chunks_per_batch):
            batches.append((run[0], min(run[-1] + chunk, n_patches)))
            run = []
        run.append(c)
    if run:
        batches.append((run[0], min(run[-1] + chunk, n_patches)))
    return batches


class PrefetchReader:
    """Iterate over batches of ``array[start:stop]`` read ``prefetch`` batches ahead."""

    def __init__(self, array: Any, ranges: list[tuple[int, int]], prefetch: int = 2, pin_memory: bool = False):
        self.array = array
        self.ranges = list(ranges)
        self.prefetch = max(1, prefetch)
        self.pin_memory = pin_memory
        self._pool = ThreadPoolExecutor(max_workers=self.prefetch, thread_name_prefix="patch-reader")
        self.wait_seconds = 0.0

    def _read(self, start: int, stop: int) -> torch.Tensor:
        images = torch.from_numpy(np.ascontiguousarray(self.array[start:stop], dtype=np.uint8))
        return images.pin_memory() if self.pin_memory else images

    def __iter__(self) -> Iterator[PatchBatch]:
        queue: deque[tuple[int, int, Future]] = deque()
        todo = iter(self.ranges)
        for start, stop in todo:
            queue.append((start, stop, self._pool.submit(self._read, start, stop)))
            if len(queue) >= self.prefetch:
                break
        while queue:
            start, stop, future = queue.popleft()
            t0 = time.perf_counter()
            images = future.result()
            waited = time.perf_counter() - t0
            self.wait_seconds += waited
            nxt = next(todo, None)
            if nxt is not None:
                queue.append((*nxt, self._pool.submit(self._read, *nxt)))
            yield PatchBatch(start, stop, images, waited)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "PrefetchReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
