"""Patch store: round trips through plain zarr, completion marker, done flags, refusal of foreign stores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr

from wsi_pipeline.errors import ArtifactError
from wsi_pipeline.store.contracts import SlideInfo
from wsi_pipeline.store.patches import PatchStore


def _store(path: Path, n: int = 5, codec: str = "jpeg", per_chunk: int = 2) -> PatchStore:
    coords = np.stack([np.arange(n) * 100, np.arange(n) * 7], axis=1)
    return PatchStore.create(path, coords, patch_size=32, overlap=4, target_mpp=0.5, scale=2.0, level=0,
                             slide_info=SlideInfo(name="s", fingerprint="f"), identity="id-1", codec=codec,
                             jpeg_quality=95, patches_per_chunk=per_chunk)


def _patches(n: int) -> np.ndarray:
    yy, xx = np.mgrid[0:32, 0:32]
    base = np.stack([100 + 3 * xx, 120 + 2 * yy, 180 + xx // 2], axis=-1)
    return np.stack([base + 5 * i for i in range(n)]).astype(np.uint8)


@pytest.mark.parametrize(("codec", "tolerance"), [("jpeg", 2.0), ("zstd", 0.0), ("none", 0.0)])
def test_round_trip_through_plain_zarr(tmp_path: Path, codec: str, tolerance: float) -> None:
    store = _store(tmp_path / "p.zarr", codec=codec)
    data = _patches(5)
    for chunk in range(store.n_chunks):  # last shard holds one patch only
        store.write_chunk(chunk, data[store.chunk_slice(chunk)])
    store.mark_complete()
    array = zarr.open_group(tmp_path / "p.zarr", mode="r")["patches"]
    assert array.shape == (5, 32, 32, 3) and array.dtype == np.uint8
    assert np.abs(array[:].astype(int) - data).mean() <= tolerance
    again = PatchStore.open(tmp_path / "p.zarr")
    assert again.is_complete and again.n_patches == 5 and again.patch_size == 32 and again.overlap == 4
    assert again.coords.tolist()[2] == [200, 14] and again.coords.dtype == np.int64
    assert again.scale == 2.0 and again.target_mpp == 0.5 and again.fingerprint == "id-1"
    assert again.slide_info.name == "s"


def test_incomplete_store_is_refused_and_reports_missing_chunks(tmp_path: Path) -> None:
    store = _store(tmp_path / "p.zarr")
    store.write_chunk(1, _patches(2))
    with pytest.raises(ArtifactError, match="incomplete"):
        PatchStore.open(tmp_path / "p.zarr")
    partial = PatchStore.open(tmp_path / "p.zarr", require_complete=False)
    assert partial.missing_chunks() == [0, 2]
    with pytest.raises(ArtifactError, match="2 of 3 chunks missing"):
        partial.mark_complete()
    assert not PatchStore.open(tmp_path / "p.zarr", require_complete=False).is_complete


def test_missing_and_foreign_stores(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="not found"):
        PatchStore.open(tmp_path / "nothing.zarr")
    zarr.open_group(tmp_path / "other.zarr", mode="w").attrs["hello"] = 1
    with pytest.raises(ArtifactError, match="not a wsi_pipeline patch store"):
        PatchStore.open(tmp_path / "other.zarr")
    with pytest.raises(ArtifactError, match="refusing to delete"):
        PatchStore.remove(tmp_path / "other.zarr")
    assert (tmp_path / "other.zarr").exists()


def test_wrong_shape_chunk_is_rejected(tmp_path: Path) -> None:
    store = _store(tmp_path / "p.zarr")
    with pytest.raises(ArtifactError, match="chunk 0"):
        store.write_chunk(0, _patches(3))


def test_layout_is_documented_zarr_v3(tmp_path: Path) -> None:
    store = _store(tmp_path / "p.zarr", codec="jpeg")
    meta = json.loads((tmp_path / "p.zarr" / "patches" / "zarr.json").read_text())
    assert meta["zarr_format"] == 3
    sharding = meta["codecs"][0]
    assert sharding["name"] == "sharding_indexed"
    assert sharding["configuration"]["chunk_shape"] == [1, 32, 32, 3]
    assert sharding["configuration"]["codecs"][0]["name"] == "numcodecs.imagecodecs_jpeg"
    assert meta["chunk_grid"]["configuration"]["chunk_shape"] == [2, 32, 32, 3]
    assert store.attrs["schema"] == "wsi_pipeline.patches" and store.attrs["version"] == 1


def test_unknown_or_missing_store_attributes_name_the_file_and_key(tmp_path: Path) -> None:
    store = _store(tmp_path / "p.zarr")
    group = zarr.open_group(tmp_path / "p.zarr", mode="r+")
    attrs = dict(group.attrs["wsi_pipeline"])
    group.attrs["wsi_pipeline"] = {**attrs, "colour": "red"}
    with pytest.raises(ArtifactError, match=r"zarr.json: unknown key 'colour' in the patch store attributes"):
        PatchStore.open(store.path, require_complete=False)
    del attrs["patch_size"]
    group.attrs["wsi_pipeline"] = attrs
    with pytest.raises(ArtifactError, match=r"zarr.json: missing key 'patch_size'"):
        PatchStore.open(store.path, require_complete=False)
