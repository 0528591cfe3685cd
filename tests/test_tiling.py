"""Stage 1 end to end: cell mask on real cytology, pixel agreement, grid, resume, schedulers, error paths."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import openslide
import pytest

from wsi_pipeline.cli.main import main
from wsi_pipeline.config import TilingConfig, load_config
from wsi_pipeline.errors import ArtifactError, SlideError
from wsi_pipeline.io import open_slide
from wsi_pipeline.io.tiffwriter import wrap_image_as_slide
from wsi_pipeline.store.patches import PatchStore
from wsi_pipeline.tiling import tile_slide
from wsi_pipeline.tiling.grid import GridSpec, grid_positions

FIELD_AT = (2560, 2048)  # where lbc_field sits on the blank glass canvas (level-0 x, y)


def _cfg(**changes: object) -> TilingConfig:
    return load_config(overrides={"tiling": {"scheduler": "threads", "workers": 1, **changes}}).tiling


@pytest.fixture(scope="module")
def lbc_canvas(cytology_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """The real TCT field pasted onto 9216 x 7168 px of noisy empty glass, written as a 0.25 um/px slide."""
    field = cv2.cvtColor(cv2.imread(str(cytology_dir / "lbc_field.jpg")), cv2.COLOR_BGR2RGB)
    glass = np.median(field.reshape(-1, 3), axis=0)
    rng = np.random.default_rng(0)
    canvas = np.clip(glass + rng.normal(0, 3, (7168, 9216, 3)), 0, 255).astype(np.uint8)
    x, y = FIELD_AT
    canvas[y : y + field.shape[0], x : x + field.shape[1]] = field
    path = wrap_image_as_slide(canvas, tmp_path_factory.mktemp("lbc") / "lbc_canvas.svs", mpp=0.25)
    return path, canvas


def _coverage(store: PatchStore, shape: tuple[int, int]) -> np.ndarray:
    covered = np.zeros(shape, bool)
    size0 = int(round(store.patch_size * store.scale))
    for x, y in store.coords:
        covered[y : y + size0, x : x + size0] = True
    return covered


def test_mask_keeps_every_nucleus_and_drops_glass(lbc_canvas: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    path, canvas = lbc_canvas
    result = tile_slide(path, tmp_path, _cfg(), progress=False)
    store = PatchStore.open(result.store_path)
    covered = _coverage(store, canvas.shape[:2])
    x, y = FIELD_AT
    field = canvas[y : y + 2816, x : x + 4096]
    nuclei = cv2.cvtColor(field, cv2.COLOR_RGB2GRAY) < 100  # dark, stained nuclei
    assert nuclei.sum() > 10_000
    assert covered[y : y + 2816, x : x + 4096][nuclei].mean() >= 0.99
    # glass is dropped: fewer patches than the grid, and each kept one reaches the field or the mask's
    # deliberate margin around it (dilate_um plus one mask pixel)
    assert result.n_patches < 0.5 * result.n_grid
    size0 = store.patch_size * store.scale
    margin = (60.0 + 8.0) / 0.25
    for px, py in store.coords:
        assert px + size0 > x - margin and px < x + 4096 + margin and py + size0 > y - margin and py < y + 2816 + margin
    assert 0 < result.kept_fraction < 0.5 and result.kept_area_mm2 == pytest.approx(result.kept_fraction * 9216 * 7168 * 0.0625 / 1e6)
    mask = cv2.imread(str(result.mask_path), cv2.IMREAD_GRAYSCALE)
    assert mask.shape == (224, 288) and set(np.unique(mask)) == {0, 255}


@pytest.mark.parametrize(("codec", "tolerance"), [("none", 1.0), ("jpeg", 3.0)])
def test_patches_match_openslide_and_grid(slides_dir: Path, tmp_path: Path, codec: str, tolerance: float) -> None:
    path = slides_dir / "cmu-1-small-region.svs"
    cfg = _cfg(target_mpp=0.499, patch_size=256, overlap=32, codec=codec)
    result = tile_slide(path, tmp_path, cfg, progress=False)
    store = PatchStore.open(result.store_path)
    grid = grid_positions(2220, 2967, GridSpec(256, 32, 0.499, 0.499))
    assert result.n_grid == len(grid) == 10 * 14
    assert store.scale == pytest.approx(1.0) and store.attrs["level"] == 0
    grid_set = {tuple(p) for p in grid.tolist()}
    assert all(tuple(p) in grid_set for p in store.coords.tolist())  # kept patches sit on the grid, in order
    assert (np.diff(store.coords[:, 1]) >= 0).all()
    with openslide.OpenSlide(str(path)) as reference:
        for i in (0, store.n_patches // 2, store.n_patches - 1):
            x, y = (int(v) for v in store.coords[i])
            expected = reference.read_region((x, y), 0, (256, 256))
            rgba = np.asarray(expected)
            rgb = np.where(rgba[..., 3:] == 0, 255, rgba[..., :3])  # outside the slide: white in both
            assert np.abs(store.patches[i].astype(int) - rgb).mean() < tolerance


def test_resampled_patches_come_from_the_best_level(lbc_canvas: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    path, canvas = lbc_canvas
    result = tile_slide(path, tmp_path, _cfg(target_mpp=1.0, patch_size=128, overlap=0, codec="none"), progress=False)
    store = PatchStore.open(result.store_path)
    assert store.attrs["level"] == 1 and store.scale == 4.0  # level 1 is exactly 1.0 um/px
    x, y = (int(v) for v in store.coords[store.n_patches // 2])
    expected = cv2.resize(canvas[y : y + 512, x : x + 512], (128, 128), interpolation=cv2.INTER_AREA)
    assert np.abs(store.patches[store.n_patches // 2].astype(int) - expected).mean() < 4  # via a JPEG pyramid level


def test_reuse_mismatch_and_force(slides_dir: Path, tmp_path: Path) -> None:
    path = slides_dir / "cmu-1-small-region.svs"
    first = tile_slide(path, tmp_path, _cfg(patch_size=512, overlap=0), progress=False)
    again = tile_slide(path, tmp_path, _cfg(patch_size=512, overlap=0, workers=2), progress=False)
    assert again.reused and again.n_patches == first.n_patches
    with pytest.raises(ArtifactError, match="different slide or with different tiling parameters"):
        tile_slide(path, tmp_path, _cfg(patch_size=512, overlap=64), progress=False)
    rebuilt = tile_slide(path, tmp_path, _cfg(patch_size=512, overlap=64), progress=False, force=True)
    assert not rebuilt.reused and PatchStore.open(rebuilt.store_path).overlap == 64


def test_resume_after_kill_9(lbc_canvas: tuple[Path, np.ndarray], tmp_path: Path) -> None:
    path, canvas = lbc_canvas
    args = ["tile", str(path), "--out", str(tmp_path), "--target-mpp", "0.25", "--patch-size", "128",
            "--overlap", "0", "--codec", "none", "--scheduler", "synchronous", "--no-progress", "-q"]
    code = "import sys; from wsi_pipeline.cli.main import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.Popen([sys.executable, "-c", code, *args], env={**os.environ, "WSI_TEST_CHILD": "1"})
    flags = tmp_path / "patches.zarr" / "done" / "c"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(flags.glob("*"))) < 3 and proc.poll() is None:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with pytest.raises(ArtifactError, match="incomplete"):
        PatchStore.open(tmp_path / "patches.zarr")
    partial = PatchStore.open(tmp_path / "patches.zarr", require_complete=False)
    missing_before = partial.missing_chunks()
    assert 0 < len(missing_before) < partial.n_chunks
    assert main(args) == 0  # the same command finishes the job
    store = PatchStore.open(tmp_path / "patches.zarr")
    assert store.is_complete and store.missing_chunks() == []
    with open_slide(path) as slide:
        for i in (0, store.n_patches // 3, store.n_patches - 1):
            x, y = (int(v) for v in store.coords[i])
            assert np.array_equal(store.patches[i], slide.read_region(0, x, y, 128, 128))


def test_schedulers_give_identical_stores(slides_dir: Path, tmp_path: Path) -> None:
    path = slides_dir / "cmu-1-small-region.svs"
    cfg = _cfg(patch_size=384, overlap=64, patches_per_chunk=4, batch_patches=8)
    stores = {}
    for scheduler in ("threads", "processes", "distributed"):
        result = tile_slide(path, tmp_path / scheduler, dataclasses.replace(cfg, scheduler=scheduler, workers=2),
                            progress=False)
        stores[scheduler] = PatchStore.open(result.store_path)
    base = stores["threads"]
    assert base.n_patches > 8
    for other in ("processes", "distributed"):
        assert np.array_equal(stores[other].coords, base.coords)
        assert np.array_equal(stores[other].patches[:], base.patches[:])


@pytest.mark.parametrize(
    ("name", "extra", "reason"),
    [
        ("missing.svs", [], "file not found"),
        ("broken.svs", [], "not a slide"),
        ("unopenable.tiff", [], "unsupported TIFF compression"),
        ("unreadable.svs", ["--patch-size", "16", "--target-mpp", "0.499", "--overlap", "0"], "cannot decode"),
        ("kidney-48-5.tif", [], "pass --mpp"),
        ("boxes.tiff", [], "implausible resolution"),
        ("small.svs", [], "smaller than one patch"),
    ],
)
def test_cli_errors_are_one_line_and_leave_no_complete_store(
    slides_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, extra: list[str], reason: str
) -> None:
    out = tmp_path / "out"
    assert main(["tile", str(slides_dir / name), "--out", str(out), "--scheduler", "threads", "-q", *extra]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and name in err and reason in err and "\n" not in err
    assert "Traceback" not in err
    store = out / "patches.zarr"
    assert not store.exists() or not PatchStore.open(store, require_complete=False).is_complete


def test_directory_given_as_slide(slides_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tile", str(slides_dir), "--out", str(tmp_path / "o"), "-q"]) == 1
    assert "is a directory" in capsys.readouterr().err


def test_all_background_slide_is_refused(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    glass = np.clip(np.array([238, 236, 245]) + rng.normal(0, 3, (3000, 3000, 3)), 0, 255).astype(np.uint8)
    path = wrap_image_as_slide(glass, tmp_path / "glass.svs", mpp=0.25)
    with pytest.raises(SlideError, match="glass.svs: no stained cells found"):
        tile_slide(path, tmp_path / "out", _cfg(), progress=False)
    assert not (tmp_path / "out" / "patches.zarr").exists()


def test_wsi_info_lists_names_not_pixels(slides_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(slides_dir / "cmu-1-small-region.svs")]) == 0
    text = capsys.readouterr().out
    assert "aperio" in text and "2220 x 2967" in text and "0.4990" in text and "label, macro, thumbnail" in text
