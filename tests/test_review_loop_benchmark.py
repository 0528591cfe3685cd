"""The review loop end to end on a tiny subset (issue 25 item 5): real CRIC training fields through
`wsi-run`, the simulated reviewer, `wsi data build --folder` and a short fine-tune, resumable."""

from __future__ import annotations

import hashlib
import json

import pytest

from benchmark_helpers import load_benchmark
from wsi_pipeline.benchmarking import CRIC_SPLIT
from wsi_pipeline.datasets.split import read_split
from wsi_pipeline.models.checkpoint import load_checkpoint

loop = load_benchmark("review_loop")


def test_loop_fields_are_training_fields_in_a_fixed_order(cytology_dir):
    split = read_split(CRIC_SPLIT)
    fields = loop.training_fields()
    assert fields and all(split.side(f) == "train" for f in fields)
    assert fields[:5] == loop.training_fields(5)  # the order is fixed: N reviewed fields are a prefix
    assert fields != sorted(fields)


@pytest.mark.slow
def test_review_loop_runs_end_to_end_and_resumes(tmp_path, cytology_dir):
    out, result = tmp_path / "loop", tmp_path / "loop.json"
    args = ["--steps", "1,2", "--fields", "2", "--iterations", "2", "--epochs", "0", "--out", str(out), "--no-score",
            "--json", str(result)]
    assert loop.main(args) == 0
    record = json.loads(result.read_text())
    assert [s["fields"] for s in record["steps"]] == [1, 2]
    for step in record["steps"]:
        assert step["review"].get("pending", 0) < sum(step["review"].values())  # the reviewer decided cells
        assert step["patches"] > 0 and sum(step["boxes"].values()) > 0
        assert step["model"] == "model.pt"  # outside the project: no machine's path in the record
        assert load_checkpoint(out / f"fields{step['fields']}" / "model" / "model.pt").meta["training"]["iterations"] >= 2
    reviewed = json.loads((out / "runs" / loop.training_fields(1)[0].stem / "review.geojson").read_text())
    assert reviewed["simulated"]["hit_um"] == 10.0
    assert {f["properties"]["review"] for f in reviewed["features"]} - {"pending", "confirmed", "corrected", "rejected"} == set()
    # the base model (v2, which never saw a CRIC field), not the bundled v3, is what a step fine-tunes
    assert load_checkpoint(out / "fields1" / "model" / "model.pt").meta["training"]["config"]["init_weights"] == str(loop.BASE)
    # the loop: round 1's field is screened by the base model, round 2's new field by round 1's model
    assert record["steps"][0]["reviewed_by"] == "benchmarks/results/models/starter_v2.pt"
    screened_by = json.loads((out / "runs" / loop.training_fields(2)[1].stem / "report.json").read_text())["model"]["sha256"]
    assert screened_by == hashlib.sha256((out / "fields1" / "model" / "model.pt").read_bytes()).hexdigest()
    assert sum(record["steps"][1]["new_fields_review"].values()) < sum(record["steps"][1]["review"].values())
    # a rerun resumes: nothing is run, built or trained again
    model = out / "fields1" / "model" / "model.pt"
    stamp = model.stat().st_mtime_ns
    assert loop.main(args) == 0
    assert model.stat().st_mtime_ns == stamp
