"""benchmarks/longtail_cells.py (issue 22): split by field, the steep draw, paired seeds, the bootstrap, the
verdict rule, and a smoke run of the whole script on a tiny subset of the real CRIC cells."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmark_helpers import load_benchmark
from wsi_pipeline.datasets.split import read_split

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cytology"
needs_data = pytest.mark.skipif(not (DATA / "cric_cells" / "index.csv").is_file() or not (DATA / "cric_fields").is_dir(),
                                reason="the CRIC data (../shared/data/cytology) is not in this checkout")


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("longtail_cells")


# ------------------------------------------------------------------ data


@needs_data
def test_no_field_on_both_sides_and_test_side_holds_30_of_every_class(bench):
    split = read_split(bench.SPLIT)
    for cells in (bench.load_crop_cells(), bench.load_context_cells()):
        train = {cells.fields[i] for i in cells.index("train")}
        test = {cells.fields[i] for i in cells.index("test")}
        assert train and test and not train & test
        assert all(split.side(f) == "val" for f in test) and all(split.side(f) == "train" for f in train)
    crops = bench.load_crop_cells()
    assert len(crops.ids) == 9158
    counts = crops.counts(crops.index("test"))
    assert min(counts.values()) >= 30 and counts["SCC"] == 32


@needs_data
def test_steep_draw_is_fixed_and_has_the_written_counts(bench):
    crops = bench.load_crop_cells()
    train = crops.index("train")
    labels = crops.labels[train]
    rows = bench.steep_draw(labels)
    assert np.array_equal(rows, bench.steep_draw(labels))  # fixed seed: the same cells every time
    assert not np.array_equal(rows, bench.steep_draw(labels, seed=bench.STEEP_SEED + 1))
    assert len(np.unique(rows)) == len(rows)
    drawn = crops.counts(train[rows])
    assert drawn == {"NILM": int((labels == 0).sum()), **bench.STEEP_COUNTS}
    assert drawn == {"NILM": 3633, "ASC-US": 66, "LSIL": 220, "ASC-H": 120, "HSIL": 400, "SCC": 36}
    assert drawn["NILM"] / min(drawn.values()) >= 100
    assert bench.rare_classes(drawn) == bench.ABNORMAL  # every abnormal class is under 10% of the draw


def test_steep_draw_refuses_more_cells_than_there_are(bench):
    with pytest.raises(ValueError, match="SCC"):
        bench.steep_draw(np.array([0, 0, 5]), {"SCC": 2})
    with pytest.raises(ValueError, match="NILM"):
        bench.parse_counts("NILM=5,SCC=1")


# ------------------------------------------------------------------ paired seeds


def _train(bench, loss: str, seed: int, feats: torch.Tensor, labels: np.ndarray):
    spec = bench.LOSS_SPECS[loss]
    head = bench.new_head(feats.shape[-1], seed, spec.get("prior", bench.PRIOR))
    initial = head.weight.detach().clone()
    criterion = bench.build_loss(spec["loss"], len(bench.CLASSES), spec.get("params"))
    plan = bench.batch_plan(labels, 2, 8, feats.shape[1], seed, spec.get("repeat_factor"))
    seen: list = []
    bench.fit(head, criterion, feats, labels, plan, {"lr": 1e-2, "weight_decay": 0.0}, record=seen)
    return initial, seen


def test_paired_seeds_give_two_losses_the_same_head_batches_and_views(bench):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 6, size=40)
    feats = torch.randn(40, 3, 5)  # 40 cells, 3 cached views, 5 features
    init_a, seen_a = _train(bench, "bce", 7, feats, labels)
    init_b, seen_b = _train(bench, "gradlibra_v2", 7, feats, labels)
    assert torch.equal(init_a, init_b)
    assert len(seen_a) == len(seen_b) == 2 * 5
    assert all(np.array_equal(ra, rb) and np.array_equal(va, vb) for (ra, va), (rb, vb) in zip(seen_a, seen_b))
    assert {int(v) for _, views in seen_a for v in views} == {0, 1, 2}  # the views are drawn, not always the first
    init_c, seen_c = _train(bench, "bce", 8, feats, labels)
    assert not torch.equal(init_a, init_c)
    assert not all(np.array_equal(ra, rc) for (ra, _), (rc, _) in zip(seen_a, seen_c))


def test_repeat_factor_sampling_repeats_the_rare_class(bench):
    labels = np.array([0] * 99 + [1])
    plan = bench.batch_plan(labels, 1, 1000, 1, seed=0, repeat_threshold=0.1)
    rows = np.concatenate([r for r, _ in plan])
    assert (rows == 99).sum() == 3 and (rows < 99).sum() == 99  # r = sqrt(0.1 / 0.01) = 3.16 -> 3 or 4 copies


# ------------------------------------------------------------------ bootstrap and metrics


def test_bootstrap_interval_on_a_hand_made_case(bench):
    # two seeds, paired deltas 0.0 and 0.2: bootstrap means are 0 (1/4), 0.1 (1/2), 0.2 (1/4)
    records = [{"loss": "a", "seed": 0, "rare_map": 0.5}, {"loss": "a", "seed": 1, "rare_map": 0.7},
               {"loss": "focal", "seed": 0, "rare_map": 0.5}, {"loss": "focal", "seed": 1, "rare_map": 0.5}]
    mean, low, high = bench.paired_delta(records, "a", "focal")
    assert mean == pytest.approx(0.1) and low == pytest.approx(0.0) and high == pytest.approx(0.2)
    same = [{"loss": loss, "seed": s, "rare_map": 0.4 + 0.1 * s + (0.05 if loss == "a" else 0)}
            for loss in ("a", "focal") for s in range(5)]
    assert bench.paired_delta(same, "a", "focal") == pytest.approx((0.05, 0.05, 0.05))


def test_field_bootstrap_resamples_fields(bench):
    labels = np.array([0, 5, 0, 5])
    perfect = np.array([[1, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 1]] * 2, float)
    swapped = perfect.copy()
    swapped[2:] = perfect[2:][::-1]  # field b ranked wrong
    mean, low, high = bench.field_bootstrap_delta([perfect], [swapped], labels, ["a", "a", "b", "b"], ["SCC"], resamples=200)
    assert low == pytest.approx(0.0) and high > low and 0 < mean < high


def test_metrics_on_a_hand_made_case(bench):
    labels = np.array([0] * 10 + [5, 5, 1, 1])
    logits = np.full((14, 6), -5.0)
    logits[:10, 0] = 5
    logits[np.arange(10), 1] = np.linspace(-4, 0, 10)  # NILM abnormal scores: one is the top 10%
    logits[10, 5], logits[11, 5], logits[11, 0] = 3, -4.5, 0  # one SCC above the 10% NILM line, one below (called NILM)
    logits[12:, 1] = 2
    m = bench.metrics(logits, labels, ["SCC"])
    assert m["nilm_flagged"] == pytest.approx(0.1)
    assert m["rare_recall_at_10_nilm"] == pytest.approx(0.5)
    assert m["per_class_ap"]["ASC-US"] == pytest.approx(1.0)
    assert m["balanced_accuracy"] == pytest.approx(np.mean([1.0, 1.0, 0.5]))  # NILM, ASC-US, SCC present
    assert m["per_class_ap"]["LSIL"] is None


# ------------------------------------------------------------------ verdict


def _deltas(bench, per_seed: dict[str, dict[str, list[float]]]) -> dict:
    """rare mAP per seed -> per loss and distribution the paired delta vs focal."""
    out: dict = {}
    for dist in bench.DECIDING:
        records = [{"loss": loss, "seed": s, "rare_map": v} for loss, by in per_seed.items() for s, v in enumerate(by[dist])]
        for loss in per_seed:
            out.setdefault(loss, {})[dist] = bench.paired_delta(records, loss, "focal") if loss != "focal" else None
    return out


FOCAL = [0.40, 0.42, 0.38, 0.41, 0.39]


def test_verdict_clear_win(bench):
    per_seed = {"focal": {"natural": FOCAL, "steep": [v - 0.1 for v in FOCAL]},
                "efl": {"natural": [v + 0.05 for v in FOCAL], "steep": [v - 0.06 for v in FOCAL]},
                "eqlv2": {"natural": [v + 0.02 for v in FOCAL], "steep": [v - 0.09 for v in FOCAL]}}
    outcome, winner, text = bench.verdict(_deltas(bench, per_seed))
    assert (outcome, winner) == ("decided", "efl")  # both win; efl's smaller delta (0.04) beats eqlv2's (0.01)
    assert "+0.050" in text


def test_verdict_tie_is_inconclusive(bench):
    per_seed = {"focal": {"natural": FOCAL, "steep": FOCAL},
                "efl": {"natural": [v + d for v, d in zip(FOCAL, [0.01, -0.01, 0.02, -0.02, 0.0])],
                        "steep": [v + d for v, d in zip(FOCAL, [-0.01, 0.01, 0.0, 0.01, -0.01])]}}
    outcome, winner, text = bench.verdict(_deltas(bench, per_seed))
    assert (outcome, winner) == ("inconclusive", None)
    assert "efl natural +0.000" in text


def test_verdict_win_on_one_distribution_only_is_inconclusive(bench):
    per_seed = {"focal": {"natural": FOCAL, "steep": FOCAL},
                "gradlibra_v2": {"natural": [v + 0.05 for v in FOCAL],
                                 "steep": [v + d for v, d in zip(FOCAL, [0.03, -0.02, 0.01, -0.03, 0.0])]}}
    deltas = _deltas(bench, per_seed)
    assert deltas["gradlibra_v2"]["natural"][1] > 0 and deltas["gradlibra_v2"]["steep"][1] < 0
    assert bench.verdict(deltas)[:2] == ("inconclusive", None)


def test_the_reference_and_focal_never_win(bench):
    win = (0.1, 0.05, 0.15)
    deltas = {"focal": {"natural": None, "steep": None}, "bce_la": {"natural": win, "steep": win}}
    assert bench.verdict(deltas)[:2] == ("inconclusive", None)


# ------------------------------------------------------------------ smoke run


@needs_data
def test_smoke_run_writes_json_with_every_key(bench, tmp_path):
    out = tmp_path / "longtail_cells"
    assert bench.main(["--limit", "5", "--views", "2", "--epochs", "2", "--seeds", "0,1", "--finetune-epochs", "1",
                       "--steep-counts", "HSIL=4,LSIL=3,ASC-H=3,ASC-US=2,SCC=1",
                       "--cache", str(tmp_path / "cache"), "--out", str(out)]) == 0
    result = json.loads(out.with_suffix(".json").read_text())
    for key in ("losses", "seeds", "distributions", "verdict", "winner"):
        assert key in result
    assert result["losses"] == bench.LOSSES and result["seeds"] == [0, 1]
    assert set(result["distributions"]) == {"natural", "steep", "context"}
    assert result["verdict"] in ("decided", "inconclusive")
    assert result["winner"] is None or result["winner"] in bench.LOSSES
    for loss in bench.LOSSES + bench.REFERENCES:
        for dist in result["distributions"]:
            entry = result["results"][loss][dist]
            assert {"rare_map_mean", "rare_map_std", "delta_vs_focal"} <= set(entry)
    steep = result["results"]["efl"]["steep"]
    assert steep["rare_map_mean"] is not None and len(steep["delta_vs_focal"]) == 3  # [mean, low, high]
    draw = result["distributions"]["steep"]["draw"]
    assert draw["seed"] == bench.STEEP_SEED and draw["counts"]["SCC"] == 1 and draw["counts"]["NILM"] == "all"
    assert len(result["finetune"]["runs"]) == len(bench.LOSSES) + 1
    assert "Verdict" in out.with_suffix(".md").read_text()
    # a rerun resumes from the cache: nothing is trained again, same numbers
    assert bench.main(["--limit", "5", "--views", "2", "--epochs", "2", "--seeds", "0,1", "--finetune-epochs", "1",
                       "--steep-counts", "HSIL=4,LSIL=3,ASC-H=3,ASC-US=2,SCC=1", "--summary-only",
                       "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "again")]) == 0
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["results"]["efl"]["steep"]["rare_map_mean"] == steep["rare_map_mean"]
