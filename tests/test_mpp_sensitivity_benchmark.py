"""benchmarks/mpp_sensitivity.py: both fields' pixel sizes scaled by the factor, and the summary of a run."""

from __future__ import annotations

from benchmark_helpers import load_benchmark

from wsi_pipeline.aggregate.cell_hits import NucleusHitResult


def test_each_factor_scales_both_pixel_sizes_and_summarises_the_fields(monkeypatch, tmp_path):
    bench = load_benchmark("mpp_sensitivity")
    real_fields = bench.real_fields
    seen = {}

    def fake_cric(model, out, taxonomy, thresholds, fields=None, mpp=None):
        seen["cric"] = mpp
        return {"pooled": NucleusHitResult(abnormal_found=3, abnormal_total=28, nilm_flagged=2, nilm_total=159)}

    def fake_tct(model, out, taxonomy, thresholds, mpp=None):
        seen["tct"] = mpp
        return {f"f{i}": {"top_in_circle": i == 0, "counted_abnormal_outside": i, "best_circle_rank": rank}
                for i, rank in enumerate([1, 40, None, 8])}

    monkeypatch.setattr(real_fields, "cric", fake_cric)
    monkeypatch.setattr(real_fields, "tct_marked", fake_tct)
    line = bench.at_factor(tmp_path / "model.pt", tmp_path, 1.25)
    assert seen == {"cric": real_fields.CRIC_MPP * 1.25, "tct": real_fields.TCT_MPP * 1.25}
    assert line["cric_abnormal_found"] == "3/28" and line["cric_nilm_flagged"] == "2/159"
    assert line["tct_top_in_circle"] == "1/4" and line["tct_outside_mean"] == 1.5
    assert line["tct_best_circle_rank_median"] == 8.0  # of 1, 40, 8: a field without a circled detection is left out
