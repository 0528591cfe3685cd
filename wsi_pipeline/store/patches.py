"""The zarr v3 patch store written by ``wsi tile`` and read by ``wsi detect`` (layout: docs/store.md).

``OUT/patches.zarr`` is a zarr v3 group holding
``patches`` (N, P, P, 3) uint8, sharded: one shard = ``patches_per_chunk`` patches, one inner chunk per patch,
``coords`` (N, 2) int64 level-0 x, y of each patch's top-left corner, and ``done`` (n_shards,) uint8 flags.
Shards are encoded here and written straight to disk (atomic rename), then their ``done`` flag is set;
``complete`` in the group attributes is written last. Readers use plain zarr.

Example:
    >>> import tempfile, numpy as np
    >>> out = Path(tempfile.mkdtemp()) / "patches.zarr"
    >>> store = PatchStore.create(out, np.array([[0, 0], [448, 0]]), patch_size=64, overlap=8, target_mpp=0.5,
    ...                           scale=2.0, level=0, slide_info=SlideInfo(name="demo"), identity="abc")
    >>> store.write_chunk(0, np.full((2, 64, 64, 3), 200, np.uint8)); store.mark_complete()
    >>> again = PatchStore.open(out)
    >>> again.n_patches, again.patches.shape, int(again.patches[1].mean()) in range(198, 203)
    (2, (2, 64, 64, 3), True)
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import struct
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import imagecodecs
import imagecodecs.numcodecs
import numcodecs
import numpy as np
import zarr
from zarr.abc.codec import ArrayBytesCodec
from zarr.codecs import BytesCodec, ShardingCodec, ZstdCodec

from .. import __version__
from ..errors import ArtifactError
from ..fsutil import atomic_write
from .contracts import STORE_SCHEMA, STORE_VERSION, SlideInfo, StoreMeta

SCHEMA = STORE_SCHEMA
VERSION = STORE_VERSION
ATTR_KEY = "wsi_pipeline"
CODECS = ("jpeg", "zstd", "none")
ZSTD_LEVEL = 1
JPEG_CODEC_NAME = "numcodecs.imagecodecs_jpeg"


@lru_cache(maxsize=8)
def _numcodecs_jpeg(level: int) -> Any:
    return numcodecs.get_codec({"id": "imagecodecs_jpeg", "level": level})


@dataclass(frozen=True)
class ImagecodecsJpeg(ArrayBytesCodec):
    """imagecodecs' JPEG codec as a zarr v3 array->bytes codec (name ``numcodecs.imagecodecs_jpeg``).

    Written against zarr's public codec API (``zarr.abc.codec.ArrayBytesCodec``); the metadata it
    writes, ``{"name": "numcodecs.imagecodecs_jpeg", "configuration": {"level": Q}}``, is the one zarr's
    own numcodecs wrapper writes, so stores keep their layout. Not part of the zarr v3 spec: other
    zarr implementations may not read it (docs/store.md).
    """

    is_fixed_size = False
    level: int = 90

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImagecodecsJpeg:
        config = dict(data.get("configuration") or {})
        config.pop("id", None)
        return cls(**config)

    def to_dict(self) -> dict[str, Any]:
        return {"name": JPEG_CODEC_NAME, "configuration": {"level": self.level}}

    async def _decode_single(self, chunk_data: Any, chunk_spec: Any) -> Any:
        out = await asyncio.to_thread(_numcodecs_jpeg(self.level).decode, chunk_data.to_bytes())
        return chunk_spec.prototype.nd_buffer.from_ndarray_like(np.asarray(out).reshape(chunk_spec.shape))

    async def _encode_single(self, chunk_data: Any, chunk_spec: Any) -> Any:
        out = await asyncio.to_thread(_numcodecs_jpeg(self.level).encode, chunk_data.as_ndarray_like())
        return chunk_spec.prototype.buffer.from_bytes(out)

    def compute_encoded_size(self, input_byte_length: int, chunk_spec: Any) -> int:
        raise NotImplementedError  # JPEG output size depends on the content


imagecodecs.numcodecs.register_codecs(codecs=["imagecodecs_jpeg"], verbose=False)
zarr.registry.register_codec(JPEG_CODEC_NAME, ImagecodecsJpeg)


def _inner_codecs(codec: str, jpeg_quality: int) -> list[Any]:
    if codec == "jpeg":
        return [ImagecodecsJpeg(level=jpeg_quality)]
    if codec == "zstd":
        return [BytesCodec(), ZstdCodec(level=ZSTD_LEVEL)]
    if codec == "none":
        return [BytesCodec()]
    raise ArtifactError(None, f"unknown patch codec {codec!r} (known: {', '.join(CODECS)})")


def encode_patch(patch: np.ndarray, codec: str, jpeg_quality: int) -> bytes:
    """Bytes of one inner chunk, exactly as zarr's declared codec for ``codec`` would decode them."""
    if codec == "jpeg":
        return bytes(imagecodecs.jpeg8_encode(patch, level=jpeg_quality))
    raw = np.ascontiguousarray(patch).tobytes()
    return bytes(imagecodecs.zstd_encode(raw, level=ZSTD_LEVEL)) if codec == "zstd" else raw


class PatchStore:
    """A patch store on disk; create with :meth:`create`, read with :meth:`open`."""

    meta: StoreMeta

    def __init__(self, path: Path, group: zarr.Group) -> None:
        self.path = path
        self._group = group
        meta = group.attrs.get(ATTR_KEY)
        if not isinstance(meta, dict) or meta.get("schema") != SCHEMA:
            raise ArtifactError(path, "not a wsi_pipeline patch store")
        if meta.get("version") != VERSION:
            raise ArtifactError(path, f"patch store version {meta.get('version')}, this software reads {VERSION}")
        self.meta = StoreMeta.from_dict(meta, path / "zarr.json")
        self._coords: np.ndarray | None = None

    # ---- opening ---------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike[str], require_complete: bool = True) -> PatchStore:
        """Open a store; ArtifactError when it is missing, foreign, or (with ``require_complete``) unfinished."""
        p = Path(path)
        if not (p / "zarr.json").is_file():
            raise ArtifactError(p, "patch store not found (run `wsi tile` first)")
        try:
            group = zarr.open_group(p, mode="r+" if not require_complete else "r")
        except Exception as exc:  # zarr raises several types for damaged metadata
            raise ArtifactError(p, f"not a readable zarr group: {exc}") from None
        store = cls(p, group)
        if require_complete and not store.is_complete:
            raise ArtifactError(p, "patch store is incomplete (interrupted run); rerun `wsi tile` to finish it")
        return store

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        coords: np.ndarray,
        *,
        patch_size: int,
        overlap: int,
        target_mpp: float,
        scale: float,
        level: int,
        slide_info: SlideInfo,
        identity: str,
        codec: str = "jpeg",
        jpeg_quality: int = 90,
        patches_per_chunk: int = 16,
        extra: dict[str, Any] | None = None,
    ) -> PatchStore:
        """Create an empty (incomplete) store with its coordinates; patches are added with :meth:`write_chunk`."""
        p = Path(path)
        if p.exists():
            raise ArtifactError(p, "already exists; remove it or use --force")
        coords = np.asarray(coords, dtype=np.int64).reshape(-1, 2)
        n = len(coords)
        if n == 0:
            raise ArtifactError(p, "no patches to store")
        group = zarr.open_group(p, mode="w-", zarr_format=3)
        shard = (min(patches_per_chunk, n), patch_size, patch_size, 3)
        group.create_array(
            "patches",
            shape=(n, patch_size, patch_size, 3),
            dtype="uint8",
            chunks=shard,
            serializer=ShardingCodec(
                chunk_shape=(1, patch_size, patch_size, 3),
                codecs=_inner_codecs(codec, jpeg_quality),
                index_codecs=[BytesCodec(endian="little")],
            ),
            compressors=None,
            filters=None,
            fill_value=255,
            dimension_names=["patch", "y", "x", "rgb"],
        )
        group.create_array("coords", data=coords, chunks=(max(n, 1), 2), dimension_names=["patch", "xy"])
        n_chunks = -(-n // shard[0])
        group.create_array("done", shape=(n_chunks,), dtype="uint8", chunks=(1,), fill_value=0, compressors=None)
        meta = StoreMeta.from_dict({
            "identity": identity,
            "software": f"wsi_pipeline {__version__}",
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "n_patches": n,
            "patch_size": patch_size,
            "overlap": overlap,
            "target_mpp": target_mpp,
            "scale": scale,
            "level": level,
            "codec": codec,
            "jpeg_quality": jpeg_quality if codec == "jpeg" else None,
            "patches_per_chunk": shard[0],
            **(extra or {}),
        }, p)
        meta.slide = slide_info
        group.attrs[ATTR_KEY] = meta.to_dict()
        return cls(p, group)

    # ---- writing ---------------------------------------------------------------------------------
    @property
    def n_chunks(self) -> int:
        return -(-self.n_patches // self.patches_per_chunk)

    def chunk_slice(self, chunk: int) -> slice:
        """Patch indices held by shard ``chunk``."""
        k = self.patches_per_chunk
        return slice(chunk * k, min((chunk + 1) * k, self.n_patches))

    def write_chunk(self, chunk: int, patches: np.ndarray) -> None:
        """Encode and write shard ``chunk`` in one atomic file, then flag it done (safe from many processes)."""
        sl = self.chunk_slice(chunk)
        if patches.shape != (sl.stop - sl.start, self.patch_size, self.patch_size, 3) or patches.dtype != np.uint8:
            raise ArtifactError(self.path, f"chunk {chunk}: got patches {patches.shape} {patches.dtype}")
        codec, quality = self.meta.codec, self.meta.jpeg_quality or 0
        blobs = [encode_patch(patch, codec, quality) for patch in patches]
        index = []
        offset = 0
        for blob in blobs:
            index.append((offset, len(blob)))
            offset += len(blob)
        missing = 2**64 - 1
        index += [(missing, missing)] * (self.patches_per_chunk - len(blobs))
        shard = b"".join(blobs) + b"".join(struct.pack("<QQ", o, n) for o, n in index)
        chunk_dir = self.path / "patches" / "c" / str(chunk) / "0" / "0"
        chunk_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(chunk_dir / "0", shard)
        flag_dir = self.path / "done" / "c"
        flag_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(flag_dir / str(chunk), b"\x01")

    def missing_chunks(self) -> list[int]:
        """Shards not yet flagged done (what a resumed run still has to write)."""
        done = self._group["done"][:]
        return [int(i) for i in np.flatnonzero(done == 0)]

    def mark_complete(self, **extra: Any) -> None:
        """Write the completion marker, last; refuses while any shard is missing."""
        missing = self.missing_chunks()
        if missing:
            raise ArtifactError(self.path, f"{len(missing)} of {self.n_chunks} chunks missing; cannot mark complete")
        meta = StoreMeta.from_dict(dict(self.meta.to_dict(), **extra, complete=True,
                                        completed=time.strftime("%Y-%m-%dT%H:%M:%S%z")), self.path / "zarr.json")
        self._group.attrs[ATTR_KEY] = meta.to_dict()
        self.meta = meta

    @staticmethod
    def remove(path: str | os.PathLike[str]) -> None:
        """Delete a patch store, refusing anything that is not one (so --force cannot delete other data)."""
        p = Path(path)
        try:
            meta = json.loads((p / "zarr.json").read_text()).get("attributes", {}).get(ATTR_KEY, {})
        except (OSError, ValueError):
            meta = {}
        if meta.get("schema") != SCHEMA:
            raise ArtifactError(p, "exists and is not a wsi_pipeline patch store; refusing to delete it")
        shutil.rmtree(p)

    # ---- reading ---------------------------------------------------------------------------------
    @property
    def patches(self) -> zarr.Array:
        """(N, P, P, 3) uint8 zarr array; slice it (``store.patches[i:j]``) to decode a batch."""
        return self._group["patches"]  # type: ignore[return-value]

    @property
    def coords(self) -> np.ndarray:
        """(N, 2) int64 level-0 x, y of each patch's top-left corner."""
        if self._coords is None:
            self._coords = np.asarray(self._group["coords"][:], dtype=np.int64)
        return self._coords

    @property
    def attrs(self) -> dict[str, Any]:
        """The group attributes as a plain dict (the typed form is :attr:`meta`)."""
        return self.meta.to_dict()

    @property
    def n_patches(self) -> int:
        return int(self.meta.n_patches)

    @property
    def patch_size(self) -> int:
        return int(self.meta.patch_size)

    @property
    def patches_per_chunk(self) -> int:
        return int(self.meta.patches_per_chunk)

    @property
    def overlap(self) -> int:
        return int(self.meta.overlap)

    @property
    def target_mpp(self) -> float:
        return float(self.meta.target_mpp)

    @property
    def scale(self) -> float:
        """Level-0 pixels per patch pixel (target_mpp / slide mpp_x)."""
        return float(self.meta.scale)

    @property
    def slide_info(self) -> SlideInfo:
        """path, name, width, height, mpp, fingerprint, vendor of the source slide."""
        return self.meta.slide

    @property
    def fingerprint(self) -> str:
        """Identity of the store: hash of the slide fingerprint and every parameter that shapes the patches."""
        return str(self.meta.identity)

    @property
    def cell_area_mm2(self) -> float:
        return float(self.meta.cell_area_mm2 or 0.0)

    @property
    def tiling_seconds(self) -> float | None:
        """How long the tiling run that completed the store took (None when not recorded)."""
        return self.meta.seconds

    @property
    def is_complete(self) -> bool:
        return bool(self.meta.complete)

    def __repr__(self) -> str:
        state = "complete" if self.is_complete else "incomplete"
        return f"<PatchStore {self.path} {self.n_patches} patches of {self.patch_size} px, {state}>"
