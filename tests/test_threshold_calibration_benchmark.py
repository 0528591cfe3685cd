"""benchmarks/threshold_calibration.py: thresholds calibrated on one half of the fields, scored on the other."""

from __future__ import annotations

from benchmark_helpers import load_benchmark
from test_threshold_calibration import tuning_field

bench = load_benchmark("threshold_calibration")


def test_two_folds_calibrate_on_one_half_and_score_the_other(tmp_path, capsys):
    detections, truth = tmp_path / "fields", tmp_path / "truth"
    for field in ("a", "b"):  # two identical hand-made fields (see test_threshold_calibration.py)
        made = tmp_path / "made" / field
        made.mkdir(parents=True)
        det, geojson = tuning_field(made)
        (detections / field).mkdir(parents=True)
        det.rename(detections / field / "detections.parquet")
        truth.mkdir(exist_ok=True)
        geojson.rename(truth / f"{field}.geojson")
    assert bench.main(["--fields", str(detections), "--truth", str(truth), "--recall", "0.5"]) == 0
    # calibrated on the twin field: LSIL 0.625 keeps the NILM cell's LSIL 0.5 uncounted, which 0.5 counts
    assert ("pooled held-out at recall 0.5: abnormal found 8/10 (default thresholds 8/10), "
            "NILM flagged 0/2 (default 2/2)") in capsys.readouterr().out
