"""Tiling benchmark: how close the patch reader and `wsi tile` come to raw JPEG decoding, against OpenSlide.

Generates (once, cached) a JPEG pyramidal slide of >= 20,000 x 20,000 px built from the real TCT field
``../shared/data/cytology/lbc_field.jpg`` (mirrored copies), then measures in one run, on 512 px patches at
native resolution:
  (a) ceiling: decoding the slide's own level-0 JPEG tiles from memory (1 and 2 processes)
  (b) the project's patch reader alone (read + decode + resize; no store)
  (c) OpenSlide read_region as the reader, writing the same patch store (1 process)
  (d) `wsi tile` with 1 and 2 workers (processes scheduler), default codec, to disk, incl. start-up and mask
  (e) store codecs: jpeg / zstd / none written from the project's reader (patches/s and compression ratio)
and prints patches/s, MB/s (decoded RGB), ratios to (a) and peak memory.

    .venv/bin/python benchmarks/tiling.py [--size 20480] [--cache DIR]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import openslide
import psutil
import tifffile

from wsi_pipeline.benchmarking import PROJECT as ROOT
from wsi_pipeline.benchmarking.images import LBC_FIELD, read_rgb
from wsi_pipeline.io import open_slide
from wsi_pipeline.io.tiffwriter import mirrored_tiling, write_pyramidal_tiff
from wsi_pipeline.store.contracts import SlideInfo
from wsi_pipeline.store.patches import PatchStore
from wsi_pipeline.tiling.worker import ReadPlan, read_patch

PATCH = 512


def make_slide(size: int, cache: Path) -> Path:
    path = cache / f"bench_{size}.svs"
    if path.exists():
        return path
    cache.mkdir(parents=True, exist_ok=True)
    field = read_rgb(LBC_FIELD)
    t = time.perf_counter()
    # mirrored copies so the content is continuous and every tile holds real cells
    write_pyramidal_tiff(path, size, size, mirrored_tiling(field), mpp=0.25, tile_size=512, quality=85)
    print(f"generated {path} ({path.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t:.0f} s")
    return path


def _decode_all(args: tuple[str, list[bytes], list[int]]) -> int:
    path, blobs, indices = args
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        for blob, index in zip(blobs, indices):
            page.decode(blob, index, jpegtables=page.jpegtables)
    return len(blobs)


def _read_all(args: tuple[str, list[tuple[int, int]]]) -> int:
    path, coords = args
    with open_slide(path) as slide:
        plan = ReadPlan(path, None, 0, PATCH, PATCH)
        for x, y in coords:
            read_patch(slide, plan, x, y)
    return len(coords)


def timed_pool(func, parts: list, procs: int) -> float:
    t = time.perf_counter()
    if procs == 1:
        for part in parts:
            func(part)
    else:
        with mp.get_context("spawn").Pool(procs) as pool:
            pool.map(func, parts)
    return time.perf_counter() - t


def store_loop(path: str, coords: np.ndarray, out: Path, reader: str, codec: str) -> tuple[float, float]:
    """Write a store in one process from ``reader`` (project | openslide); returns seconds and compression ratio."""
    store = PatchStore.create(out, coords, patch_size=PATCH, overlap=0, target_mpp=0.25, scale=1.0, level=0,
                              slide_info=SlideInfo(), identity=reader, codec=codec, jpeg_quality=90, patches_per_chunk=16)
    t = time.perf_counter()
    if reader == "openslide":
        handle = openslide.OpenSlide(path)

        def read(x: int, y: int) -> np.ndarray:
            rgba = np.asarray(handle.read_region((int(x), int(y)), 0, (PATCH, PATCH)))
            return np.ascontiguousarray(rgba[..., :3])
    else:
        slide = open_slide(path)
        plan = ReadPlan(path, None, 0, PATCH, PATCH)

        def read(x: int, y: int) -> np.ndarray:
            return read_patch(slide, plan, int(x), int(y))
    for chunk in range(store.n_chunks):
        store.write_chunk(chunk, np.stack([read(x, y) for x, y in store.coords[store.chunk_slice(chunk)]]))
    seconds = time.perf_counter() - t
    stored = sum(f.stat().st_size for f in (out / "patches").rglob("*") if f.is_file())
    return seconds, len(coords) * PATCH * PATCH * 3 / stored


def run_cli(path: Path, out: Path, workers: int) -> tuple[float, float, int]:
    """`wsi tile` in a subprocess; seconds, peak memory (sum of RSS over the process tree, GB), patches."""
    cmd = [str(ROOT / ".venv/bin/wsi"), "tile", str(path), "--out", str(out), "--target-mpp", "0.25", "--overlap", "0",
           "--workers", str(workers), "--scheduler", "processes", "--no-progress", "-q"]
    t = time.perf_counter()
    proc = psutil.Popen(cmd)
    peak = 0
    while proc.poll() is None:
        try:
            rss = proc.memory_info().rss + sum(c.memory_info().rss for c in proc.children(recursive=True))
        except psutil.Error:
            rss = 0
        peak = max(peak, rss)
        time.sleep(0.05)
    seconds = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"wsi tile failed with exit code {proc.returncode}")
    return seconds, peak / 1e9, PatchStore.open(out / "patches.zarr").n_patches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=20480, help="slide side in px (>= 20000 for the reported numbers)")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "wsi_bench")
    args = parser.parse_args()
    path = make_slide(args.size, args.cache)
    print(f"load: {os.getloadavg()} on {os.cpu_count()} cores")
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        with open(path, "rb") as fh:
            blobs = []
            for off, n in zip(page.dataoffsets, page.databytecounts):
                fh.seek(off)
                blobs.append(fh.read(n))
    n = len(blobs)
    mb = n * PATCH * PATCH * 3 / 1e6
    idx = list(range(n))
    half = n // 2
    rows = []

    def add(name: str, seconds: float, count: int, base: float | None) -> float:
        rate = count / seconds
        rows.append((name, rate, count * PATCH * PATCH * 3 / 1e6 / seconds, rate / base if base else 1.0))
        return rate

    a1 = add("(a) raw JPEG tile decode, 1 proc", timed_pool(_decode_all, [(str(path), blobs, idx)], 1), n, None)
    a2 = add("(a) raw JPEG tile decode, 2 procs",
             timed_pool(_decode_all, [(str(path), blobs[:half], idx[:half]), (str(path), blobs[half:], idx[half:])], 2), n, None)
    rows[-1] = (*rows[-1][:3], 1.0)
    grid = [(x, y) for y in range(0, args.size - PATCH + 1, PATCH) for x in range(0, args.size - PATCH + 1, PATCH)]
    add("(b) patch reader alone, 1 proc", timed_pool(_read_all, [(str(path), grid)], 1), len(grid), a1)
    add("(b) patch reader alone, 2 procs",
        timed_pool(_read_all, [(str(path), grid[: len(grid) // 2]), (str(path), grid[len(grid) // 2 :])], 2), len(grid), a2)
    work = args.cache / "runs"
    shutil.rmtree(work, ignore_errors=True)
    coords = np.array(grid, dtype=np.int64)
    sec_c, _ = store_loop(str(path), coords, work / "openslide.zarr", "openslide", "jpeg")
    c1 = add("(c) OpenSlide read_region + jpeg store, 1 proc", sec_c, len(grid), a1)
    ratios = {}
    for codec in ("jpeg", "zstd", "none"):
        sec, ratios[codec] = store_loop(str(path), coords, work / f"own-{codec}.zarr", "project", codec)
        add(f"(e) project reader + {codec} store, 1 proc", sec, len(grid), a1)
    peaks = {}
    for workers in (1, 2):
        sec, peaks[workers], count = run_cli(path, work / f"cli{workers}", workers)
        add(f"(d) wsi tile --workers {workers} (incl. start-up + mask)", sec, count, a1 if workers == 1 else a2)
    print(f"\n{'path':58} {'patches/s':>10} {'MB/s':>8} {'vs (a)':>7}")
    for name, rate, mbs, ratio in rows:
        print(f"{name:58} {rate:10.0f} {mbs:8.0f} {ratio:7.2f}")
    d1, d2 = rows[-2][1], rows[-1][1]
    print(f"\nslide {args.size} x {args.size} px, {n} level-0 tiles ({mb:.0f} MB decoded), {len(grid)} patches of {PATCH} px")
    print(f"(d) 1 worker / (c): {d1 / c1:.2f}x   (d) 2 workers / 1 worker: {d2 / d1:.2f}x")
    print(f"store compression ratio: " + ", ".join(f"{k} {v:.1f}x" for k, v in ratios.items()))
    print(f"peak memory of wsi tile (process tree RSS): 1 worker {peaks[1]:.2f} GB, 2 workers {peaks[2]:.2f} GB")
    print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
