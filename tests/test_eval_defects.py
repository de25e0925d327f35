"""Issue 15, items 15 and 16: COCO AP follows the model's detections per image, and VOC07 / VOC AP50
are the official VOC devkit's numbers (VOCevaldet.m, VOCap.m), worked by hand below."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from rcnn_cli.eval import evaluate
from rcnn_cli.eval.voc import ClassCurve, ap_11_point, ap_all_points, class_curves


def crowded_scene(count: int = 150):
    """One image, ``count`` separate 30 x 30 boxes on a 15-column grid, found exactly, scores 1 .. 0.1."""
    xy = np.stack(np.meshgrid(np.arange(15) * 40.0, np.arange(count // 15) * 40.0), -1).reshape(-1, 2)
    boxes = torch.tensor(np.concatenate([xy, xy + 30], axis=1), dtype=torch.float32)
    labels = torch.ones(count, dtype=torch.int64)
    target = {"boxes": boxes, "labels": labels}
    prediction = {"boxes": boxes, "labels": labels, "scores": torch.linspace(1, 0.1, count)}
    return prediction, target


def pycocotools_stats(prediction, target, max_dets: list[int]) -> list[float]:
    """pycocotools' stats with ``maxDets``; its summarize() takes stats[0] (AP) at 100 detections
    whatever maxDets says, so AP is read from its precision array as summarize() reads it."""
    gt = COCO()
    gt.dataset = {"images": [{"id": 1, "width": 640, "height": 480}], "categories": [{"id": 1, "name": "cell"}],
                  "annotations": [{"id": i + 1, "image_id": 1, "category_id": 1, "iscrowd": 0,
                                   "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1)}
                                  for i, (x1, y1, x2, y2) in enumerate(target["boxes"].tolist())]}
    gt.createIndex()
    results = [{"image_id": 1, "category_id": 1, "score": s, "bbox": [x1, y1, x2 - x1, y2 - y1]}
               for (x1, y1, x2, y2), s in zip(prediction["boxes"].tolist(), prediction["scores"].tolist())]
    evaluator = COCOeval(gt, gt.loadRes(results), "bbox")
    evaluator.params.maxDets = max_dets
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    precision = evaluator.eval["precision"][:, :, :, 0, -1]    # area "all", the last maxDets
    return [float(precision[precision > -1].mean()), *evaluator.stats[1:]]


@pytest.mark.filterwarnings("ignore:Encountered more than")
def test_coco_ap_counts_every_detection_the_model_may_make():
    prediction, target = crowded_scene(150)
    # COCO's default keeps the best 100 of 150 perfect detections: recall 100/150, so precision 1 at
    # the 67 recall points 0, .01, ..., .66 of 101 and 0 after: AP 67/101.
    capped = evaluate([prediction], [target], ["cell"]).summary()
    assert capped["map"] == pytest.approx(67 / 101) and capped["mar_100"] == pytest.approx(100 / 150)
    # The model may return up to 150 (model.box_detections_per_img=150): every object is found.
    summary = evaluate([prediction], [target], ["cell"], max_detections=150).summary()
    assert summary["map"] == pytest.approx(1.0) and summary["map_50"] == pytest.approx(1.0)
    assert summary["mar_150"] == pytest.approx(1.0) and "mar_100" not in summary
    assert summary["per_class"]["cell"]["ap50"] == pytest.approx(1.0)
    # Same numbers as pycocotools with maxDets [1, 10, 150].
    stats = pycocotools_stats(prediction, target, [1, 10, 150])
    ours = [summary[k] for k in ("map", "map_50", "map_75", "map_small", "mar_1", "mar_10", "mar_150")]
    assert ours == pytest.approx([stats[i] for i in (0, 1, 2, 3, 6, 7, 8)], abs=1e-6)


@pytest.mark.filterwarnings("ignore:Encountered more than")
def test_coco_max_detections_below_ten_caps_ap_there():
    prediction, target = crowded_scene(15)
    # 5 of 15 boxes: recall 1/3, precision 1 at recall points 0 .. .33 (34 of 101).
    summary = evaluate([prediction], [target], ["cell"], max_detections=5).summary()
    assert summary["map"] == pytest.approx(34 / 101) and summary["mar_5"] == pytest.approx(5 / 15)


def box_set():
    """The devkit case worked by hand in test_voc_ap_is_the_devkits. One class; boxes are inclusive
    pixel ranges as in VOC XML, so [0, 0, 9, 9] is 10 x 10 pixels."""
    targets = [
        {"boxes": torch.tensor([[0, 0, 9, 9], [20, 20, 39, 39], [50, 50, 69, 69.]]),       # A, B (difficult), C
         "labels": torch.tensor([1, 1, 1]), "ignore": torch.tensor([False, True, False])},
        {"boxes": torch.tensor([[0, 0, 29, 29.]]), "labels": torch.tensor([1]),             # D
         "ignore": torch.tensor([False])},
    ]
    predictions = [
        {"boxes": torch.tensor([[2, 2, 11, 10], [20, 20, 39, 39], [0, 0, 9, 9], [100, 100, 120, 120],
                                [50, 50, 69, 69.]]),
         "scores": torch.tensor([0.9, 0.8, 0.6, 0.5, 0.4]), "labels": torch.ones(5, dtype=torch.int64)},
        {"boxes": torch.tensor([[0, 0, 29, 14.]]), "scores": torch.tensor([0.7]), "labels": torch.tensor([1])},
    ]
    return predictions, targets


def test_voc_ap_is_the_devkits():
    # Devkit overlap (VOCevaldet.m): iw = min(x2) - max(x1) + 1, ih likewise, union = (w1+1)(h1+1) +
    # (w2+1)(h2+1) - iw*ih; a detection takes the box it overlaps most and counts when ovmax >= 0.5.
    # By decreasing score (npos = 3: A, C, D; B is difficult):
    #   .9 [2,2,11,10] vs A: iw 8, ih 8 -> 64 / (100 + 90 - 64) = 64/126 = .508 -> TP
    #      (without the +1: 7*7 / (81 + 72 - 49) = 49/104 = .471, a FP)
    #   .8 [20,20,39,39] vs B (difficult): neither TP nor FP, dropped from the curve
    #   .7 [0,0,29,14] vs D: 30*15 / (900 + 450 - 450) = 450/900 = .5 exactly -> TP (devkit: >=;
    #      without the +1: 29*14 / (29*29) = 14/29 = .483, a FP)
    #   .6 [0,0,9,9] vs A, taken by .9 -> FP (multiple detection)
    #   .5 [100,100,120,120] overlaps nothing -> FP
    #   .4 [50,50,69,69] vs C -> TP
    # tp 1 2 2 2 3, fp 0 0 1 2 2: precision 1, 1, 2/3, 1/2, 3/5 at recall 1/3, 2/3, 2/3, 2/3, 1.
    # VOC07 11-point: levels 0 .. .6 (7) reach precision 1; .7 .. 1 (4) only 3/5: (7 + 4 * .6) / 11.
    # VOC2010+ (VOCap.m): envelope 1 up to recall 2/3, then 3/5: 2/3 * 1 + 1/3 * 3/5 = 13/15.
    predictions, targets = box_set()
    summary = evaluate(predictions, targets, ["cell"]).summary()
    assert summary["voc07_map50"] == pytest.approx((7 + 4 * 0.6) / 11, abs=1e-12)
    assert summary["voc_map50"] == pytest.approx(13 / 15, abs=1e-12)
    assert summary["per_class"]["cell"]["ground_truth"] == 3


@pytest.mark.parametrize(("box", "hit"), [
    ([2, 2, 11, 10], True),    # devkit 64/126 = .508; continuous 49/104 = .471
    ([0, 0, 9, 4], True),      # devkit 50/100 = .5 exactly, and the devkit's test is ovmax >= 0.5
    ([3, 3, 11, 10], False),   # devkit 7*7 / (100 + 72 - 49) = 49/123 = .398
])
def test_devkit_overlap_decides_a_match(box, hit):
    gt = {"boxes": torch.tensor([[0, 0, 9, 9.]]), "labels": torch.tensor([1]), "ignore": torch.tensor([False])}
    found = {"boxes": torch.tensor([box], dtype=torch.float32), "scores": torch.tensor([0.9]),
             "labels": torch.tensor([1])}
    (curve,) = class_curves([found], [gt], 1)
    assert curve.recall.tolist() == [1.0 if hit else 0.0]


def test_a_detection_on_a_difficult_box_is_dropped_even_when_another_took_it():
    # VOCevaldet.m: "if ~gt(i).diff(jmax)" comes before the "already detected" test, so a second
    # detection of a difficult box is not a false positive either.
    gt = {"boxes": torch.tensor([[0, 0, 9, 9], [40, 40, 49, 49.]]), "labels": torch.tensor([1, 1]),
          "ignore": torch.tensor([True, False])}
    found = {"boxes": torch.tensor([[0, 0, 9, 9], [0, 0, 9, 9], [40, 40, 49, 49.]]),
             "scores": torch.tensor([0.9, 0.8, 0.7]), "labels": torch.tensor([1, 1, 1])}
    (curve,) = class_curves([found], [gt], 1)
    assert curve.num_positives == 1 and curve.precision.tolist() == [1.0]
    assert ap_11_point(curve) == pytest.approx(1.0) and ap_all_points(curve) == pytest.approx(1.0)


def test_voc07_recall_levels_are_matlabs():
    # The devkit loops "for t=0:0.1:1"; MATLAB's colon adds multiples of 0.1 to 0 for the first half
    # and subtracts them from 1 for the second, so its 0.6 and 0.7 are the doubles nearest 0.6 and
    # 0.7, which a recall of exactly 3/5 reaches (np.linspace's 0.6000000000000001 is above it).
    # 5 positives; hit, hit, hit, miss, miss, hit: recall .2 .4 .6 .6 .6 .8, precision 1 1 1 .75 .6 4/6.
    # Levels 0 .. .6 (7) reach precision 1, .7 and .8 reach 4/6, .9 and 1 nothing: (7 + 2 * 4/6) / 11.
    hits = np.array([1, 1, 1, 0, 0, 1])
    tp, fp = np.cumsum(hits == 1), np.cumsum(hits == 0)
    curve = ClassCurve(np.linspace(1, 0.1, 6), tp / (tp + fp), tp / 5, 5)
    assert ap_11_point(curve) == pytest.approx((7 + 2 * 4 / 6) / 11, abs=1e-12)
