"""Int8 network export for onnxruntime on the CPU: `wsi model quantize`, `inference.precision: int8` (issue 23)."""

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.ops import box_iou

from wsi_pipeline.config import InferenceConfig, load_config
from wsi_pipeline.errors import ArtifactError, ConfigError
from wsi_pipeline.inference import detect_store, quantize, runtime
from wsi_pipeline.inference.device import plan_device
from wsi_pipeline.models.bundled import starter_model_path
from wsi_pipeline.models.checkpoint import export_checkpoint, file_sha256, load_checkpoint
from wsi_pipeline.models.detector import FAMILIES
from wsi_pipeline.store.detections import read_detections

from inference_helpers import make_store

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cytology"
FIELD = DATA / "lbc_field.jpg"
CRIC_FIELD = DATA / "cric_fields"

pytestmark = pytest.mark.skipif(not runtime.runtime_available(), reason="onnxruntime not installed")


def _real_tiles(n: int, size: int = 256) -> np.ndarray:
    """``n`` tiles of real Pap fields at 0.5 um/px: half from the liquid-based field, half from a CRIC smear."""
    import cv2

    if not FIELD.is_file() or not CRIC_FIELD.is_dir():
        pytest.skip(f"real fields not found under {DATA}")
    lbc = cv2.resize(cv2.cvtColor(cv2.imread(str(FIELD)), cv2.COLOR_BGR2RGB), None, fx=0.54, fy=0.54,
                     interpolation=cv2.INTER_AREA)  # ~0.27 -> 0.5 um/px
    smear_file = sorted(CRIC_FIELD.glob("*.jpg"))[0]
    smear = cv2.resize(cv2.cvtColor(cv2.imread(str(smear_file)), cv2.COLOR_BGR2RGB), None, fx=0.65, fy=0.65,
                       interpolation=cv2.INTER_AREA)  # ~0.325 -> 0.5 um/px
    rng = np.random.default_rng(1)
    tiles = []
    for image, count in ((lbc, n - n // 2), (smear, n // 2)):
        ys = rng.integers(0, image.shape[0] - size, count)
        xs = rng.integers(0, image.shape[1] - size, count)
        tiles += [image[y:y + size, x:x + size] for x, y in zip(xs, ys)]
    return np.stack(tiles)


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    """A copy of the bundled model quantized on 8 real tiles written as PNG files."""
    folder = tmp_path_factory.mktemp("int8")
    checkpoint = Path(shutil.copy(starter_model_path(), folder / "model.pt"))
    images = folder / "images"
    images.mkdir()
    for i, tile in enumerate(_real_tiles(8)):
        Image.fromarray(tile).save(images / f"{i}.png")
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(images / "small.png")  # smaller than a patch: skipped
    result = quantize.quantize_checkpoint(checkpoint, [images], count=8)
    return checkpoint, result


def test_quantize_writes_calibration_named_and_stamped_with_the_checkpoint(quantized):
    checkpoint, result = quantized
    sha = file_sha256(checkpoint)
    assert result.path == checkpoint.parent / f"model.{sha}.int8.json" and result.images == 8
    calibration = quantize.read_calibration(result.path, sha)
    assert calibration is not None and calibration["calibration_images"] == 8
    assert quantize.read_calibration(result.path, "another sha") is None
    # the stem and the 15 output convolutions (class logits, centre-ness, box regression at 5 levels) stay fp32
    assert result.kept_fp32 == 16 and "/backbone/body/_conv_stem/Conv" in calibration["kept_fp32"]
    assert 0 < result.score_diff_p95 <= 0.05 and result.score_diff_max <= 0.25
    assert len(calibration["ranges"]["data"]) > 100 and result.path.stat().st_size < 200e3  # ranges, not weights


def _networks(checkpoint: Path):
    loaded = load_checkpoint(checkpoint)
    detector, sha = loaded.detector, loaded.meta["sha256"]
    fp32 = runtime.onnx_network(detector, checkpoint, sha, 1)
    return detector, sha, fp32, quantize.int8_network(fp32, checkpoint, sha, 1)


def test_a_changed_checkpoint_never_uses_the_old_calibration_or_int8_export(quantized, tmp_path):
    checkpoint, result = quantized
    _, sha_old, _, int8_old = _networks(checkpoint)
    assert int8_old is not None and int8_old.path == checkpoint.parent / f"model.{sha_old}.int8.onnx"
    other = Path(shutil.copy(checkpoint, tmp_path / "model.pt"))
    export_checkpoint(other, other, half=False)  # re-saved: another sha256
    sha = file_sha256(other)
    shutil.copy(result.path, tmp_path / f"model.{sha}.int8.json")  # the old calibration under the new name
    shutil.copy(int8_old.path, tmp_path / f"model.{sha}.int8.onnx")  # and the old int8 export
    assert quantize.find_calibration(other, sha) is None
    assert _networks(other)[3] is None  # no calibration of this checkpoint: no int8 network
    # a calibration of this checkpoint, and a damaged or foreign export under its name: rebuilt, never used
    calibration = dict(quantize.read_calibration(result.path, sha_old), checkpoint_sha256=sha)
    (tmp_path / f"model.{sha}.int8.json").write_text(json.dumps(calibration))
    (tmp_path / f"model.{sha}.int8.onnx").write_bytes(b"damaged")
    rebuilt = _networks(other)[3]
    assert rebuilt is not None and rebuilt.precision == "int8" and rebuilt.path.stat().st_size > 1e6


def test_detection_without_calibration_warns_for_int8_and_not_for_auto(quantized, tmp_path, caplog):
    checkpoint, _ = quantized
    bare = Path(shutil.copy(checkpoint, tmp_path / "bare.pt"))
    tiles = _real_tiles(2, 256)
    store = make_store(tmp_path / "p.zarr", np.concatenate(list(tiles), axis=1), 0.5, 0.5, 256, 64)
    for precision, warnings in (("int8", 1), ("auto", 0)):
        caplog.clear()
        cfg = InferenceConfig(device="cpu", num_threads=1, backend="onnxruntime", precision=precision)
        with caplog.at_level(logging.WARNING):
            result = detect_store(store.path, bare, tmp_path / precision, cfg, progress=False)
        assert read_detections(result.detections_path).meta.inference.precision == "fp32"
        said = [r.message for r in caplog.records if "int8" in r.message]
        assert len(said) == warnings and all("wsi model quantize" in m for m in said)


def test_int8_scores_stay_close_to_fp32_on_real_tiles(quantized):
    checkpoint, _ = quantized
    detector, _, fp32, int8 = _networks(checkpoint)
    assert int8.precision == "int8" and fp32.precision == "fp32"
    tiles = torch.from_numpy(_real_tiles(12))[4:]  # not the 8 calibration tiles' positions (other draws)
    normalised = detector.normalise(detector.as_float_images(tiles))
    family = FAMILIES[detector.spec.detector]
    ref, got = family.ranking_scores(fp32(normalised)), family.ranking_scores(int8(normalised))
    diff = (got - ref).abs()[ref >= 0.1]
    assert len(diff) > 100 and float(diff.quantile(0.95)) <= 0.05 and float(diff.max()) <= 0.25
    with torch.inference_mode():
        a_all = detector.predict(tiles, score_threshold=0.05, network=fp32)
        b_all = detector.predict(tiles, score_threshold=0.05, network=int8)
    kept = matched = 0
    for a, b in zip(a_all, b_all):
        confident = a["scores"] >= 0.3
        kept += int(confident.sum())
        if confident.any() and len(b["boxes"]):
            iou = box_iou(a["boxes"][confident], b["boxes"])
            best, where = iou.max(dim=1)
            matched += int(((best > 0.7) & (a["labels"][confident] == b["labels"][where])).sum())
    assert kept >= 10 and matched >= 0.9 * kept  # the cells fp32 is sure of, int8 finds with the same class


def test_detect_store_runs_int8_and_records_it(quantized, tmp_path):
    checkpoint, _ = quantized
    tiles = _real_tiles(4, 256)
    slide = np.concatenate([np.concatenate(list(tiles[:2]), axis=1), np.concatenate(list(tiles[2:]), axis=1)], axis=0)
    store = make_store(tmp_path / "p.zarr", slide, 0.5, 0.5, 256, 64)
    runs = {}
    for precision in ("int8", "fp32"):
        cfg = InferenceConfig(device="cpu", num_threads=1, backend="onnxruntime", precision=precision)
        result = detect_store(store.path, checkpoint, tmp_path / precision, cfg, progress=False)
        runs[precision] = read_detections(result.detections_path)
    assert runs["int8"].meta.inference.precision == "int8" and runs["int8"].meta.identity["precision"] == "int8"
    assert runs["fp32"].meta.inference.precision == "fp32" and "precision" not in runs["fp32"].meta.identity
    assert abs(len(runs["int8"]) - len(runs["fp32"])) <= 0.2 * len(runs["fp32"]) + 5
    # a finished fp32 table is not taken for int8 (different identity): int8 into the fp32 folder redoes it
    cfg = InferenceConfig(device="cpu", num_threads=1, backend="onnxruntime", precision="int8")
    redo = detect_store(store.path, checkpoint, tmp_path / "fp32", cfg, progress=False)
    assert redo.patches_run == store.n_patches
    assert read_detections(redo.detections_path).meta.inference.precision == "int8"


def test_the_bundled_model_ships_an_int8_calibration_of_itself():
    model = starter_model_path()
    found = quantize.find_calibration(model, file_sha256(model))
    assert found is not None and found[0].parent == model.parent  # a new bundled model needs `wsi model quantize`
    assert found[1]["calibration_images"] >= 64 and found[1]["score_diff_p95"] <= 0.05


def test_int8_settings_that_cannot_work_are_one_line_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("inference:\n  precision: int8\n  backend: torch\n")
    with pytest.raises(ConfigError, match="int8 runs on onnxruntime"):
        load_config(bad)
    bad.write_text("inference:\n  precision: int4\n")
    with pytest.raises(ConfigError, match="inference.precision must be"):
        load_config(bad)
    assert plan_device("cpu", "int8", 0, 256, 1).precision == "fp32"  # torch's part stays fp32
    with pytest.raises(ArtifactError, match="calibration folder not found"):
        quantize.calibration_images([tmp_path / "nowhere"], 4, 256)
    (tmp_path / "tiny").mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "tiny" / "a.png")
    with pytest.raises(ArtifactError, match="no image of at least 256 px"):
        quantize.calibration_images([tmp_path / "tiny"], 4, 256)


def test_wsi_model_quantize_cli_reports_a_missing_folder_in_one_line(tmp_path):
    checkpoint = Path(shutil.copy(starter_model_path(), tmp_path / "m.pt"))
    proc = subprocess.run([sys.executable, "-m", "wsi_pipeline.cli.main", "model", "quantize", str(checkpoint),
                           str(tmp_path / "missing")], capture_output=True, text=True)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "missing" in lines[0] and "calibration folder not found" in lines[0]
    assert not list(tmp_path.glob("*.int8.*"))


def test_two_cpu_streams_give_the_same_cells_as_one(quantized, tmp_path, monkeypatch):
    from wsi_pipeline.inference import engine

    checkpoint, _ = quantized
    used = []
    in_streams = engine._run_batches_in_streams
    monkeypatch.setattr(engine, "_run_batches_in_streams", lambda *a: used.append(a[-1]) or in_streams(*a))
    tiles = _real_tiles(6, 256)
    slide = np.concatenate([np.concatenate(list(tiles[:3]), axis=1), np.concatenate(list(tiles[3:]), axis=1)], axis=0)
    store = make_store(tmp_path / "p.zarr", slide, 0.5, 0.5, 256, 64, patches_per_chunk=2)
    tables = {}
    for streams in (1, 2):
        cfg = InferenceConfig(device="cpu", num_threads=2, backend="onnxruntime", precision="int8", cpu_streams=streams,
                              batch_size=1)
        result = detect_store(store.path, checkpoint, tmp_path / f"s{streams}", cfg, progress=False)
        assert result.patches_run == store.n_patches
        tables[streams] = read_detections(result.detections_path)
    assert used == [2]  # the second run went through two sessions, the first through one
    one, two = tables[1], tables[2]
    assert len(one) > 10 and len(one) == len(two)
    assert np.array_equal(one.boxes, two.boxes) and np.array_equal(one.labels, two.labels)
    assert np.allclose(one.class_scores, two.class_scores, atol=1e-6)


def test_cpu_streams_must_not_be_negative(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("inference:\n  cpu_streams: -1\n")
    with pytest.raises(ConfigError, match="cpu_streams must be >= 0"):
        load_config(bad)
