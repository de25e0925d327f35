"""Weighted box fusion against boxes worked by hand (the expected numbers are arithmetic in the test,
never the code's output)."""

from __future__ import annotations

import pytest
import torch

from rcnn_cli.ops.fusion import weighted_box_fusion


def views(*detections):
    """One view per argument: a list of (box, score, label)."""
    boxes = [torch.tensor([d[0] for d in view], dtype=torch.float32).reshape(-1, 4) for view in detections]
    scores = [torch.tensor([d[1] for d in view], dtype=torch.float32) for view in detections]
    labels = [torch.tensor([d[2] for d in view], dtype=torch.int64) for view in detections]
    return boxes, scores, labels


def close(actual: torch.Tensor, expected: list[list[float]]) -> bool:
    return actual.shape == (len(expected), 4) and torch.allclose(actual, torch.tensor(expected), atol=1e-5)


def test_two_views_fuse_by_score_weighted_mean_and_views_that_found_the_box():
    boxes, scores, labels = views(
        [([0, 0, 10, 10], 0.9, 1), ([50, 50, 60, 60], 0.8, 1)],
        [([1, 1, 11, 11], 0.6, 1), ([0, 0, 10, 10], 0.5, 2)],
    )
    fused_boxes, fused_scores, fused_labels = weighted_box_fusion(boxes, scores, labels, iou_threshold=0.55)
    # [0,0,10,10] and [1,1,11,11]: IoU 81 / 119 = 0.68 > 0.55, one cluster; coordinates weighted 0.9 : 0.6,
    # e.g. x1 = (0.9 * 0 + 0.6 * 1) / 1.5 = 0.4; score = mean(0.9, 0.6) * 2 of 2 views = 0.75.
    # [50,50,60,60]: found by one view of two: 0.8 * 1/2 = 0.4. Class 2 is fused apart: 0.5 * 1/2 = 0.25.
    assert fused_labels.tolist() == [1, 1, 2]
    assert fused_scores.tolist() == pytest.approx([0.75, 0.4, 0.25])
    assert close(fused_boxes, [[0.4, 0.4, 10.4, 10.4], [50, 50, 60, 60], [0, 0, 10, 10]])


def test_a_box_joins_the_fused_box_not_the_clusters_first_box():
    boxes, scores, labels = views([([0, 0, 10, 10], 0.9, 0)], [([3, 0, 13, 10], 0.8, 0)], [([4, 0, 14, 10], 0.7, 0)])
    fused_boxes, fused_scores, _ = weighted_box_fusion(boxes, scores, labels, iou_threshold=0.5)
    # Second box: IoU with the first 70 / 130 = 0.54 > 0.5, joins; fused x = (0.9*0 + 0.8*3) / 1.7 = 1.412 .. 11.412.
    # Third box [4, 14]: IoU with the first box 60 / 140 = 0.43 (no match), with the fused box
    # (11.412 - 4) / (14 - 1.412) = 0.589 (match): all three fuse.
    # x1 = (0 + 0.8*3 + 0.7*4) / 2.4 = 5.2 / 2.4, x2 = (9 + 10.4 + 9.8) / 2.4 = 29.2 / 2.4; score = 2.4 / 3 * 3/3.
    assert close(fused_boxes, [[5.2 / 2.4, 0, 29.2 / 2.4, 10]])
    assert fused_scores.tolist() == pytest.approx([0.8])


def test_more_boxes_than_views_do_not_raise_the_score_above_the_mean():
    # Two boxes of one view plus one of another, all in one cluster: T = 3 boxes, N = 2 views,
    # score = mean(0.9, 0.5, 0.4) * min(3, 2) / 2 = 0.6.
    boxes, scores, labels = views([([0, 0, 10, 10], 0.9, 0), ([1, 0, 11, 10], 0.5, 0)], [([0, 1, 10, 11], 0.4, 0)])
    _, fused_scores, _ = weighted_box_fusion(boxes, scores, labels, iou_threshold=0.55)
    assert fused_scores.tolist() == pytest.approx([0.6])


def test_views_that_found_nothing_still_count_and_low_scores_are_left_out():
    boxes, scores, labels = views([([0, 0, 10, 10], 0.8, 3), ([20, 20, 30, 30], 0.1, 3)], [], [], [])
    fused_boxes, fused_scores, fused_labels = weighted_box_fusion(boxes, scores, labels, score_threshold=0.2)
    assert fused_scores.tolist() == pytest.approx([0.8 / 4])     # one box of four views
    assert fused_boxes.tolist() == [[0, 0, 10, 10]] and fused_labels.tolist() == [3]
    empty = weighted_box_fusion(*views([], []))
    assert [t.shape[0] for t in empty] == [0, 0, 0]


def test_mismatched_view_lists_are_refused():
    with pytest.raises(ValueError, match="one boxes, scores and labels tensor per view"):
        weighted_box_fusion([torch.zeros(0, 4)], [], [torch.zeros(0)])


def test_fused_detections_keep_the_detectors_rules():
    from rcnn_cli.ops.fusion import fuse_detections

    one = {"boxes": torch.tensor([[0.0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]]),
           "scores": torch.tensor([0.9, 0.7, 0.08]), "labels": torch.tensor([1, 2, 1])}
    # two identical views: each box fuses with its copy only (scores unchanged); class 2's box overlaps
    # class 1's by IoU 9 / 11 = 0.82, so agnostic NMS at 0.5 drops it; 0.08 is under the 0.1 floor.
    aware = fuse_detections([one, one], score_threshold=0.1, max_detections=10)
    assert aware["labels"].tolist() == [1, 2] and aware["scores"].tolist() == pytest.approx([0.9, 0.7])
    agnostic = fuse_detections([one, one], score_threshold=0.1, max_detections=10, agnostic_nms_iou=0.5)
    assert agnostic["labels"].tolist() == [1] and agnostic["scores"].tolist() == pytest.approx([0.9])
    capped = fuse_detections([one, one], score_threshold=0.0, max_detections=2)
    assert capped["scores"].tolist() == pytest.approx([0.9, 0.7])
