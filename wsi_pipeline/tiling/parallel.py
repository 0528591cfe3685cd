"""Run tiling tasks on a Dask scheduler: threads, local processes, a local cluster, or a cluster address."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import dask
from dask.callbacks import Callback
from tqdm import tqdm

log = logging.getLogger(__name__)
TASK_PREFIX = "tile-chunks-"
LOCAL_SCHEDULERS = ("threads", "processes", "synchronous")


class _TqdmCallback(Callback):
    """Advance a progress bar by the patches each finished tiling task wrote (local schedulers)."""

    def __init__(self, bar: tqdm) -> None:
        super().__init__()
        self.bar = bar

    def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
        if isinstance(key, str) and key.startswith(TASK_PREFIX):
            self.bar.update(int(result))


def run_tasks(func: Callable[..., int], task_args: list[tuple[Any, ...]], scheduler: str, workers: int, bar: tqdm) -> None:
    """Run ``func(*args)`` for every args tuple; ``scheduler`` is threads | processes | synchronous |
    distributed (a LocalCluster of ``workers`` processes) | tcp://host:port (an existing cluster)."""
    workers = workers or os.cpu_count() or 1
    tasks = [dask.delayed(func, pure=False)(*args, dask_key_name=f"{TASK_PREFIX}{i}") for i, args in enumerate(task_args)]
    if scheduler in LOCAL_SCHEDULERS:
        with _TqdmCallback(bar):
            dask.compute(*tasks, scheduler=scheduler, num_workers=workers)
        return
    from distributed import Client, LocalCluster, as_completed

    if scheduler == "distributed":
        # the nanny's default MALLOC_TRIM_THRESHOLD_ turns large array allocations into page faults (2x CPU)
        with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(cluster)
    elif "://" in scheduler:
        cluster = None
        client = Client(scheduler, timeout="20s")
    else:
        raise ValueError(f"unknown scheduler {scheduler!r}")
    try:
        futures = client.compute(tasks)
        for future in as_completed(futures):
            bar.update(int(future.result()))
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
