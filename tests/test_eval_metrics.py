"""Metrics: COCO numbers equal pycocotools' own, VOC AP equals a worked example, ground truth
scored against itself is perfect, difficult boxes are not misses, thresholds and plots."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from rcnn_cli.eval import coco_results, confusion_matrix, evaluate
from rcnn_cli.eval.voc import ClassCurve, ap_11_point, ap_all_points, best_f1_threshold, class_curves

NAMES = ["cat", "dog", "bird"]


def fixed_set():
    """Four images, three classes, a crowd box, an empty image, misses and false alarms."""
    rng = np.random.default_rng(0)
    targets, predictions = [], []
    for image in range(4):
        count = [3, 5, 0, 4][image]
        xy = rng.uniform(0, 300, size=(count, 2))
        wh = rng.uniform(8, 150, size=(count, 2))
        boxes = np.concatenate([xy, xy + wh], axis=1)
        labels = rng.integers(1, 4, size=count)
        ignore = np.zeros(count, bool)
        if image == 1:
            ignore[2] = True
        targets.append({"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor(labels),
                        "ignore": torch.tensor(ignore)})
        jitter = rng.normal(0, 6, size=boxes.shape)
        extra = 3
        e_xy = rng.uniform(0, 300, size=(extra, 2))
        p_boxes = np.concatenate([boxes + jitter, np.concatenate([e_xy, e_xy + 40], axis=1)])
        p_labels = np.concatenate([labels, rng.integers(1, 4, size=extra)])
        p_labels[:1] = (p_labels[:1] % 3) + 1 if image == 3 else p_labels[:1]   # one wrong class
        predictions.append({"boxes": torch.tensor(p_boxes, dtype=torch.float32),
                            "scores": torch.tensor(rng.uniform(0.05, 1, size=len(p_boxes)), dtype=torch.float32),
                            "labels": torch.tensor(p_labels)})
    return predictions, targets


def pycocotools_stats(predictions, targets, categories: list[int] | None = None) -> np.ndarray:
    images, annotations, results = [], [], []
    for image_id, (p, t) in enumerate(zip(predictions, targets)):
        images.append({"id": image_id, "width": 500, "height": 500})
        for box, label, crowd in zip(t["boxes"].tolist(), t["labels"].tolist(), t["ignore"].tolist()):
            w, h = box[2] - box[0], box[3] - box[1]
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": label,
                                "bbox": [box[0], box[1], w, h], "area": w * h, "iscrowd": int(crowd)})
        for box, score, label in zip(p["boxes"].tolist(), p["scores"].tolist(), p["labels"].tolist()):
            results.append({"image_id": image_id, "category_id": label, "score": score,
                            "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]]})
    gt = COCO()
    gt.dataset = {"images": images, "annotations": annotations,
                  "categories": [{"id": i + 1, "name": n} for i, n in enumerate(NAMES)]}
    gt.createIndex()
    evaluator = COCOeval(gt, gt.loadRes(results), "bbox")
    if categories:
        evaluator.params.catIds = categories
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return evaluator.stats


def test_per_class_ap_is_pycocotools_ap_on_that_class_alone():
    predictions, targets = fixed_set()
    summary = evaluate(predictions, targets, NAMES).summary()
    for label, name in enumerate(NAMES, start=1):
        stats = pycocotools_stats(predictions, targets, [label])
        assert (summary["per_class"][name]["ap"], summary["per_class"][name]["ap50"]) == pytest.approx(
            (stats[0], stats[1]), abs=1e-6)


def test_coco_numbers_equal_pycocotools():
    predictions, targets = fixed_set()
    summary = evaluate(predictions, targets, NAMES).summary()
    stats = pycocotools_stats(predictions, targets)
    ours = [summary[k] for k in ("map", "map_50", "map_75", "map_small", "map_medium", "map_large",
                                 "mar_1", "mar_10", "mar_100")]
    theirs = [stats[i] for i in (0, 1, 2, 3, 4, 5, 6, 7, 8)]
    assert ours == pytest.approx(theirs, abs=1e-6)
    assert 0.2 < summary["map_50"] < 0.95   # a set where the numbers mean something


def curve(outcomes: list[int], num_positives: int) -> ClassCurve:
    """A curve from detections already sorted by score: 1 = hit, 0 = false alarm."""
    hits = np.array(outcomes)
    tp, fp = np.cumsum(hits == 1), np.cumsum(hits == 0)
    return ClassCurve(np.linspace(1, 0.1, len(hits)), tp / (tp + fp), tp / num_positives, num_positives)


def test_voc_ap_matches_a_worked_example():
    # 4 positives; detections by score: hit, miss, hit, hit, miss.
    # precision 1, 1/2, 2/3, 3/4, 3/5 at recall .25, .25, .5, .75, .75.
    # 11-point: recall levels 0..0.2 -> best precision 1 (3 levels), 0.3..0.5 -> 3/4 (3 levels),
    # 0.6..0.7 -> 3/4 (2 levels), 0.8..1.0 -> 0 (3 levels): (3 + 5 * 0.75) / 11 = 0.613636...
    example = curve([1, 0, 1, 1, 0], 4)
    assert ap_11_point(example) == pytest.approx((3 + 5 * 0.75) / 11)
    # all-point: envelope 1 on (0, .25], 3/4 on (.25, .75], 0 after: .25 + .5 * .75 = 0.625
    assert ap_all_points(example) == pytest.approx(0.625)


def test_ground_truth_as_predictions_scores_one():
    _, targets = fixed_set()
    predictions = [{"boxes": t["boxes"], "labels": t["labels"], "scores": torch.ones(len(t["labels"]))}
                   for t in targets]
    summary = evaluate(predictions, targets, NAMES).summary()
    assert summary["map_50"] == pytest.approx(1.0)
    assert summary["voc07_map50"] == pytest.approx(1.0)
    assert summary["voc_map50"] == pytest.approx(1.0)


def test_a_difficult_box_is_neither_a_miss_nor_a_false_alarm():
    gt = {"boxes": torch.tensor([[0, 0, 10, 10], [50, 50, 70, 70.]]), "labels": torch.tensor([1, 1]),
          "ignore": torch.tensor([False, True])}
    found_both = {"boxes": gt["boxes"], "scores": torch.tensor([0.9, 0.8]), "labels": torch.tensor([1, 1])}
    found_one = {"boxes": gt["boxes"][:1], "scores": torch.tensor([0.9]), "labels": torch.tensor([1])}
    for prediction in (found_both, found_one):
        (c,) = class_curves([prediction], [gt], 1)
        assert c.num_positives == 1 and ap_all_points(c) == pytest.approx(1.0)


def test_threshold_picks_the_f1_maximum():
    # hits at ranks 1, 2, 4 of 5 detections; 3 positives. F1 per rank: .5, .8, .667, .857, .75
    example = curve([1, 1, 0, 1, 0], 3)
    threshold, f1 = best_f1_threshold(example)
    assert threshold == pytest.approx(example.scores[3]) and f1 == pytest.approx(6 / 7)


def test_plots_confusion_matrix_and_coco_results(tmp_path):
    predictions, targets = fixed_set()
    report = evaluate(predictions, targets, NAMES)
    written = report.save_plots(tmp_path)
    assert len(written) == 4 and all(p.stat().st_size > 1000 for p in written)
    matrix = confusion_matrix(predictions, targets, 3, score_threshold=0.0)
    assert matrix[:3].sum() == sum(len(t["labels"]) for t in targets)     # every box counted once
    results = coco_results(predictions[:1], [42], [0, 5, 9])
    assert {r["category_id"] for r in results} <= {0, 5, 9} and results[0]["image_id"] == 42
    first = predictions[0]
    x1, y1, x2, y2 = first["boxes"][0].tolist()
    assert results[0]["bbox"] == pytest.approx([x1, y1, x2 - x1, y2 - y1], abs=0.01)
    assert results[0]["category_id"] == [0, 5, 9][int(first["labels"][0]) - 1]
    json.dumps(report.summary())   # plain JSON
