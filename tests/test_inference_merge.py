"""Coordinate mapping and the merge of tile-overlap duplicates (no model, no store)."""

import numpy as np
import pytest

from wsi_pipeline.inference.merge import merge_overlaps, to_level0, touches_patch_border
from wsi_pipeline.inference.partial import PartialResults, RawDetections
from wsi_pipeline.inference.reader import PrefetchReader, plan_batches


def _merge(boxes, scores, labels, truncated, patch, iou=0.5, ios=0.6, block=512.0):
    return merge_overlaps(np.asarray(boxes, np.float32), np.asarray(scores, np.float32), np.asarray(labels),
                          np.asarray(truncated), np.asarray(patch), iou_threshold=iou, ios_threshold=ios,
                          block_size=block).tolist()


def test_to_level0_scales_and_offsets_per_box():
    boxes = np.array([[0, 0, 10, 10], [5, 6, 7, 8]], np.float32)
    origins = np.array([[100, 200], [1000, 2000]])
    out = to_level0(boxes, origins, 1.5)
    np.testing.assert_allclose(out, [[100, 200, 115, 215], [1007.5, 2009, 1010.5, 2012]])


def test_border_flag_uses_all_four_sides():
    b = np.array([[1, 50, 20, 60], [50, 1, 60, 20], [490, 50, 511.5, 60], [50, 490, 60, 512], [50, 50, 60, 60]])
    assert touches_patch_border(b, 512).tolist() == [True, True, True, True, False]


def test_identical_boxes_from_two_patches_become_one():
    box = [1000, 1000, 1040, 1030]
    assert _merge([box, box], [0.8, 0.7], [2, 2], [False, False], [0, 1]) == [0]


def test_nms_is_class_aware():
    box = [1000, 1000, 1040, 1030]
    assert _merge([box, box], [0.8, 0.7], [2, 5], [False, False], [0, 1]) == [0, 1]


def test_cut_sliver_is_dropped_in_favour_of_the_whole_cell_even_with_higher_score():
    whole, sliver = [300, 100, 360, 150], [300, 100, 310, 150]  # IoU 1/6: plain NMS would keep both
    assert _merge([sliver, whole], [0.95, 0.5], [1, 1], [True, False], [0, 1]) == [1]
    # without the cut-cell rule (ios threshold above 1 is never reached) both survive: the rule is what merges them
    assert _merge([sliver, whole], [0.95, 0.5], [1, 1], [True, False], [0, 1], ios=1.01) == [0, 1]


def test_whole_small_cell_inside_a_big_one_is_kept():
    big, small = [0, 0, 100, 100], [40, 40, 50, 50]  # not at a patch border: a real second cell
    assert _merge([big, small], [0.9, 0.8], [1, 1], [False, False], [0, 1]) == [0, 1]


def test_cut_box_from_the_same_patch_is_not_merged():
    # two boxes of one patch were already separated by the detector's own NMS
    assert _merge([[0, 0, 100, 100], [0, 40, 10, 50]], [0.9, 0.8], [1, 1], [False, True], [3, 3]) == [0, 1]


def test_truncated_box_without_partner_is_kept():
    assert _merge([[0, 0, 10, 40]], [0.3], [0], [True], [0]) == [0]


def test_block_boundaries_do_not_change_the_result():
    """Many duplicate pairs scattered over a large area: the blockwise merge equals one global merge."""
    rng = np.random.default_rng(1)
    centres = rng.uniform(0, 20000, (400, 2))
    size = rng.uniform(20, 60, (400, 2))
    whole = np.concatenate([centres - size / 2, centres + size / 2], 1)
    jitter = whole + rng.uniform(-1.0, 1.0, whole.shape)  # IoU with whole > 0.85
    sliver = whole.copy()
    sliver[:, 2] = sliver[:, 0] + size[:, 0] * 0.2
    boxes = np.concatenate([whole, jitter, sliver])
    scores = rng.uniform(0.1, 1, len(boxes))
    labels = np.tile(rng.integers(0, 3, 400), 3)
    truncated = np.r_[np.zeros(800, bool), np.ones(400, bool)]
    patch = np.r_[np.zeros(400), np.ones(400), np.full(400, 2)].astype(int)
    small_blocks = _merge(boxes, scores, labels, truncated, patch, block=128.0)
    one_block = _merge(boxes, scores, labels, truncated, patch, block=1e6)
    assert small_blocks == one_block
    assert len(one_block) == 400  # each cell exactly once


def test_empty_input():
    assert _merge(np.zeros((0, 4)), [], [], np.zeros(0, bool), []) == []


def test_plan_batches_aligns_to_chunks_and_skips_done():
    done = np.zeros(20, bool)
    done[4:8] = True  # chunk 1 finished
    assert plan_batches(20, 4, 8, done) == [(0, 4), (8, 16), (16, 20)]
    assert plan_batches(20, 4, 1, np.zeros(20, bool))[:2] == [(0, 4), (4, 8)]  # batch never splits a chunk
    assert plan_batches(0, 4, 8, np.zeros(0, bool)) == []


def test_reader_returns_the_requested_slices_in_order():
    arr = np.random.default_rng(0).integers(0, 255, (9, 4, 4, 3), dtype=np.uint8)
    ranges = [(0, 3), (3, 6), (6, 9)]
    with PrefetchReader(arr, ranges, prefetch=2) as reader:
        got = [(b.start, b.images.numpy()) for b in reader]
    assert [s for s, _ in got] == [0, 3, 6]
    np.testing.assert_array_equal(np.concatenate([g for _, g in got]), arr)


def test_partial_results_round_trip_and_reset_on_new_identity(tmp_path):
    raw = RawDetections(np.ones((2, 4), np.float32), np.array([0.5, 0.6], np.float32), np.array([1, 2]),
                        np.full((2, 3), 0.1, np.float32), np.array([4, 5]), np.array([True, False]))
    part = PartialResults.open(tmp_path, {"model": "a"})
    part.save(4, 8, raw)
    again = PartialResults.open(tmp_path, {"model": "a"})
    assert again.done_mask(10)[4:8].all() and not again.done_mask(10)[:4].any()
    back = again.load_all(3)
    np.testing.assert_array_equal(back.patch_index, [4, 5])
    assert back.truncated.tolist() == [True, False]
    other = PartialResults.open(tmp_path, {"model": "b"})
    assert not other.done_mask(10).any()


@pytest.mark.parametrize("n", [0, 1])
def test_raw_concat_of_nothing_has_the_class_width(n):
    assert RawDetections.concat([RawDetections.empty(4)] * n, 4).class_scores.shape == (0, 4)
