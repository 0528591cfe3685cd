import pytest

from wsi_pipeline.config import load_config
from wsi_pipeline.errors import ConfigError
from wsi_pipeline.taxonomy import load_taxonomy


def test_defaults_load():
    cfg = load_config()
    assert cfg.tiling.patch_size == 256 and cfg.tiling.mask.method == "otsu" and cfg.inference.backend == "auto"
    assert cfg.report.class_min_cells["HSIL"] == 1


def test_user_file_overrides_only_given_keys(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("tiling:\n  overlap: 32\n  mask: {dilate_um: 10}\n")
    cfg = load_config(f)
    assert cfg.tiling.overlap == 32 and cfg.tiling.mask.dilate_um == 10.0 and cfg.tiling.patch_size == 256


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("tiling:\n  patchsize: 3\n", "unknown key 'tiling.patchsize'"),
        ("tiling:\n  patch_size: big\n", "'tiling.patch_size' must be an integer"),
        ("tiling:\n  overlap: 1100\n", "overlap must be"),
        ("inference:\n  backend: tensorrt\n", "inference.backend must be auto, torch, onnxruntime"),
        ("tiling: [1, 2\n", "not valid YAML"),
        ("- 1\n", "top level must be a mapping"),
    ],
)
def test_bad_config_is_one_line_error_naming_file(tmp_path, text, fragment):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(f)
    assert fragment in str(err.value) and str(f) in str(err.value) and "\n" not in str(err.value)


def test_missing_config(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_taxonomy_order_and_severity():
    tax = load_taxonomy()
    assert tax.names[:3] == ["NILM", "INFL", "ASC-US"]
    sev = {n: tax[n].severity for n in tax.abnormal_names()}
    assert sev["SCC"] > sev["HSIL"] > sev["ASC-H"] > sev["LSIL"] > sev["ASC-US"]
    assert not tax["NILM"].abnormal and tax["HSIL"].rgb == (0xF4, 0x43, 0x36)


def test_fast_cpu_profile_is_large_tiles_with_its_calibrated_threshold():
    """configs/fast_cpu.yaml (docs/inference.md): 1024 px tiles, onnxruntime, report threshold 0.4 (calibrated on
    training fields for the bundled model); everything else stays at the defaults."""
    from wsi_pipeline.taxonomy import CONFIG_DIR

    fast, default = load_config(CONFIG_DIR / "fast_cpu.yaml"), load_config()
    assert (fast.tiling.patch_size, fast.inference.backend, fast.report.score_threshold) == (1024, "onnxruntime", 0.4)
    assert fast.tiling.overlap == default.tiling.overlap and fast.tiling.target_mpp == default.tiling.target_mpp
    assert fast.report.class_score_thresholds == default.report.class_score_thresholds
    assert (fast.report.morphometry_workers, default.report.morphometry_workers) == (0, 1)


def test_conventional_pap_profile_holds_the_thresholds_its_benchmark_chose():
    """configs/conventional_pap.yaml carries exactly the thresholds benchmarks/crossfit_thresholds.py calibrated
    on the CRIC training fields out of fold (its committed record, which adopted them by its rule), with the
    conventional adequacy minimum."""
    import json

    from wsi_pipeline.taxonomy import CONFIG_DIR

    record = json.loads((CONFIG_DIR.parent / "benchmarks" / "results" / "crossfit_thresholds.json").read_text())
    assert record["profile_adopted"]
    cfg = load_config(CONFIG_DIR / "conventional_pap.yaml")
    assert cfg.report.class_score_thresholds == record["thresholds"]
    assert cfg.report.preparation == "conventional" and cfg.report.score_threshold == load_config().report.score_threshold
