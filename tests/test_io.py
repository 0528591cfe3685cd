"""Slide reading: backends, mpp rules, error paths on real files, the pyramidal TIFF writer."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import openslide
import pytest
import tifffile

from wsi_pipeline.errors import SlideError
from wsi_pipeline.io import open_slide
from wsi_pipeline.io.tiffwriter import default_levels, wrap_image_as_slide, write_pyramidal_tiff


def _os_rgb(path: Path, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
    with openslide.OpenSlide(str(path)) as o:
        return np.asarray(o.read_region((x, y), level, (w, h)).convert("RGB"))


def test_svs_fast_path_matches_openslide(slides_dir: Path) -> None:
    path = slides_dir / "cmu-1-small-region.svs"
    with open_slide(path) as slide:
        assert slide.backend == "tiff-tiles" and slide.vendor == "aperio"
        assert slide.dimensions == (2220, 2967)
        assert slide.mpp == pytest.approx((0.499, 0.499)) and slide.mpp_source == "properties"
        assert sorted(slide.associated_image_names) == ["label", "macro", "thumbnail"]
        # a window crossing several 240 px tiles, at an odd offset
        ours = slide.read_region(0, 333, 1207, 601, 455)
    theirs = _os_rgb(path, 0, 333, 1207, 601, 455)
    assert ours.shape == (455, 601, 3) and ours.dtype == np.uint8
    assert np.abs(ours.astype(int) - theirs).mean() < 1.0


def test_outside_the_slide_reads_as_white(slides_dir: Path) -> None:
    with open_slide(slides_dir / "cmu-1-small-region.svs") as slide:
        region = slide.read_region(0, 2100, 2900, 300, 200)
    assert (region[150:, 200:] == 255).all()  # beyond both edges
    assert region[:50, :100].mean() < 250  # inside: real pixels


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("broken.svs", "not a slide"),
        ("unopenable.tiff", "compression"),
        ("kidney-48-5.tif", "--mpp"),
        ("boxes.tiff", "implausible resolution"),
    ],
)
def test_open_errors_name_the_file_and_reason(slides_dir: Path, name: str, reason: str) -> None:
    with pytest.raises(SlideError) as err:
        open_slide(slides_dir / name)
    message = str(err.value)
    assert name in message and reason in message and "\n" not in message


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(SlideError, match="file not found"):
        open_slide(tmp_path / "nope.svs")
    with pytest.raises(SlideError, match="is a directory"):
        open_slide(tmp_path)


def test_unreadable_pixels_raise_slide_error_on_read(slides_dir: Path) -> None:
    with open_slide(slides_dir / "unreadable.svs") as slide:  # opens fine
        with pytest.raises(SlideError, match="unreadable.svs: cannot decode"):
            slide.read_region(0, 0, 0, 16, 16)


def test_user_mpp_rescues_plain_image_and_implausible_mpp(slides_dir: Path) -> None:
    with open_slide(slides_dir / "kidney-48-5.tif", mpp=0.5) as slide:
        assert slide.backend == "image" and slide.dimensions == (1493, 901) and slide.mpp_source == "user"
        assert slide.read_region(0, 0, 0, 10, 10).shape == (10, 10, 3)
    with open_slide(slides_dir / "boxes.tiff", mpp=0.3) as slide:
        assert slide.level_count == 4 and slide.mpp == (0.3, 0.3)
        assert slide.level_downsamples[1] == pytest.approx(2.0, rel=0.01)
        assert slide.best_level_for_mpp(0.6) == 1 and slide.best_level_for_mpp(0.59) == 0
    with pytest.raises(SlideError, match="outside"):
        open_slide(slides_dir / "kidney-48-5.tif", mpp=500)


def test_dicom_goes_through_openslide(slides_dir: Path) -> None:
    with open_slide(slides_dir / "boxes_0.dcm") as slide:
        assert slide.backend == "openslide" and slide.vendor == "dicom"
        assert slide.read_region(0, 0, 0, 16, 16).shape == (16, 16, 3)


def test_transparent_pixels_become_white(tmp_path: Path) -> None:
    rgba = np.zeros((512, 512, 4), np.uint8)
    rgba[:, :256] = (200, 100, 50, 255)  # left half opaque, right half fully transparent black
    path = tmp_path / "argb.tif"
    tifffile.imwrite(path, rgba, tile=(256, 256), photometric="rgb", extrasamples=[2], resolution=(40000, 40000),
                     resolutionunit="CENTIMETER")
    with open_slide(path) as slide:
        assert slide.mpp == pytest.approx((0.25, 0.25))
        region = slide.read_region(0, 0, 0, 512, 512)
    assert (region[:, 300:] == 255).all()
    assert (region[:, :200] == (200, 100, 50)).all()


def test_16_bit_slide_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "deep.tif"
    tifffile.imwrite(path, np.zeros((256, 256, 3), np.uint16), tile=(256, 256), photometric="rgb")
    with pytest.raises(SlideError, match="16-bit"):
        open_slide(path, mpp=0.25)


def test_writer_makes_an_aperio_pyramid_both_backends_read(tmp_path: Path, cytology_dir: Path) -> None:
    field = cv2.cvtColor(cv2.imread(str(cytology_dir / "lbc_field.jpg")), cv2.COLOR_BGR2RGB)
    image = np.ascontiguousarray(field[1000:2300, 1000:3100])  # real cells, 2100 x 1300
    path = wrap_image_as_slide(image, tmp_path / "wrapped.svs", mpp=0.25, tile_size=256)
    with openslide.OpenSlide(str(path)) as o:
        assert o.properties["openslide.vendor"] == "aperio"
        assert float(o.properties["openslide.mpp-x"]) == pytest.approx(0.25)
        assert o.level_dimensions[0] == (2100, 1300) and o.level_count == default_levels(2100, 1300, 256)
    with open_slide(path) as slide:
        assert slide.backend == "tiff-tiles" and slide.level_count == 3
        full = slide.read_region(0, 0, 0, 2100, 1300)
        low = slide.read_region(1, 400, 400, 200, 150)
        thumb = slide.thumbnail(2.0)
    assert np.abs(full.astype(int) - image).mean() < 3  # JPEG q85
    assert np.abs(low.astype(int) - _os_rgb(path, 1, 400, 400, 200, 150)).mean() < 1.0
    assert thumb.shape == (162, 262, 3)  # 1300 x 2100 px at 0.25 -> 2.0 um/px
    assert not list(tmp_path.glob(".pyramid-*")) and not list(tmp_path.glob("*.partial"))


def test_writer_streams_tiles_without_full_image(tmp_path: Path) -> None:
    calls = []

    def read_tile(x: int, y: int, w: int, h: int) -> np.ndarray:
        calls.append((w, h))
        return np.full((h, w, 3), (x // 512 * 40) % 255, np.uint8)

    path = write_pyramidal_tiff(tmp_path / "s.svs", 3000, 1000, read_tile, mpp=0.5, tile_size=512)
    assert max(w * h for w, h in calls) <= 512 * 512  # only tile-sized requests
    assert len(calls) == 6 * 2
    with open_slide(path) as slide:
        assert slide.level_dimensions == [(3000, 1000), (750, 250), (188, 63)]
        assert slide.read_region(0, 1100, 10, 4, 4).mean() == pytest.approx(80, abs=3)


def test_fingerprint_is_cheap_and_content_based(tmp_path: Path, slides_dir: Path) -> None:
    with open_slide(slides_dir / "cmu-1-small-region.svs") as a, open_slide(slides_dir / "small.svs") as b:
        assert a.fingerprint() != b.fingerprint() and len(a.fingerprint()) == 64
        copy = tmp_path / "renamed.svs"
        copy.write_bytes((slides_dir / "small.svs").read_bytes())
        with open_slide(copy) as c:
            assert c.fingerprint() == b.fingerprint()
