"""VOC AP50 as the official VOC devkit computes it: VOC2007's 11-point (VOCevaldet.m) and VOC2010+'s
all-point interpolation (VOCap.m).

Devkit rules, followed to the float: boxes are inclusive pixel ranges, so a box [x1, y1, x2, y2] is
(x2 - x1 + 1) x (y2 - y1 + 1) pixels and the overlap is computed with those sizes (``devkit_iou``); a
detection takes the ground-truth box it overlaps most (first one on ties) and is a true positive when that
overlap is >= 0.5 and the box is not taken yet by a higher-scored detection, else a false positive (the
devkit's own test is ``ovmax>=VOCopts.minoverlap``; py-faster-rcnn's voc_eval.py port uses ``>``, which
differs only at exactly 0.5). That decision depends only on detections of the same image and class, so
matching runs per image and class and the precision-recall curve is built once per class from all scores
(equal scores keep the input order, as MATLAB's stable sort keeps the results file's order).

How a box marked ``ignore`` (VOC ``difficult``, COCO ``iscrowd``) counts, per metric:

- VOC07 / VOC AP50 (here, the devkit's rule): it is not a positive, so never a miss; a detection whose
  best-overlapping box (IoU >= 0.5) is such a box is neither a true nor a false positive, however many
  detections hit it.
- COCO AP/AR (coco.py): it is passed as ``iscrowd`` and COCO's crowd rule applies: not a positive, and a
  detection that matches no regular box is ignored when it covers a crowd box region by intersection over
  *the detection's own area* >= the IoU threshold; any number of detections can be absorbed that way. So a
  small detection inside a large difficult box is ignored by COCO but is a false positive in VOC.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .matching import as_numpy

TP, FP, IGNORED = 1, 0, -1

# VOCevaldet.m loops "for t=0:0.1:1". MATLAB's colon adds multiples of 0.1 to 0 for the first half and
# subtracts them from 1 for the second, so 0.3 is 3 * 0.1 = 0.30000000000000004 but 0.6 and 0.7 are the
# doubles nearest 0.6 and 0.7; np.linspace / np.arange give 0.6000000000000001 and 0.7000000000000001,
# which a recall of exactly 3/5 or 7/10 does not reach.
VOC07_RECALL_LEVELS = tuple(k * 0.1 for k in range(5)) + (0.5,) + tuple(1 - k * 0.1 for k in range(4, -1, -1))


@dataclass
class ClassCurve:
    """Per class: detection scores sorted high to low, cumulative precision and recall."""

    scores: np.ndarray      # (D,)
    precision: np.ndarray   # (D,)
    recall: np.ndarray      # (D,)
    num_positives: int      # ground-truth boxes that count (difficult ones do not)


def match_image(boxes: np.ndarray, scores: np.ndarray, gt_boxes: np.ndarray, gt_ignore: np.ndarray,
                iou_threshold: float = 0.5) -> np.ndarray:
    """Per detection TP / FP / IGNORED for one image and class.

    boxes: (D, 4) xyxy, scores: (D,), gt_boxes: (G, 4) xyxy, gt_ignore: (G,) bool; overlaps as
    ``devkit_iou`` computes them.
    """
    outcome = np.full(len(boxes), FP, np.int8)
    if len(boxes) == 0 or len(gt_boxes) == 0:
        return outcome
    iou = devkit_iou(boxes, gt_boxes)                 # (D, G)
    best_gt, best_iou = iou.argmax(axis=1), iou.max(axis=1)
    taken = np.zeros(len(gt_boxes), bool)
    for d in np.argsort(-scores, kind="stable"):
        if best_iou[d] < iou_threshold:               # the devkit matches when ovmax >= minoverlap
            continue
        g = best_gt[d]
        if gt_ignore[g]:
            outcome[d] = IGNORED
        elif not taken[g]:
            outcome[d], taken[g] = TP, True
    return outcome


def devkit_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) overlap of boxes a: (N, 4) and b: (M, 4), xyxy inclusive pixel ranges, in VOCevaldet.m's
    arithmetic and order of operations (float64); pairs that share no pixel column or row score 0."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]) + 1
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]) + 1
    area_a = (a[:, 2] - a[:, 0] + 1) * (a[:, 3] - a[:, 1] + 1)
    area_b = (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)
    overlapping = (iw > 0) & (ih > 0)
    union = area_a[:, None] + area_b[None, :] - iw * ih
    return np.where(overlapping, iw * ih / np.where(overlapping, union, 1.0), 0.0)


def class_curves(predictions: list[dict], targets: list[dict], num_classes: int,
                 iou_threshold: float = 0.5) -> list[ClassCurve]:
    """One ClassCurve per label 1..num_classes over the whole set."""
    scores: list[list[np.ndarray]] = [[] for _ in range(num_classes)]
    outcomes: list[list[np.ndarray]] = [[] for _ in range(num_classes)]
    positives = np.zeros(num_classes, np.int64)
    for prediction, target in zip(predictions, targets):
        p_boxes, p_scores, p_labels = (as_numpy(prediction[k]) for k in ("boxes", "scores", "labels"))
        g_boxes, g_labels = as_numpy(target["boxes"]).reshape(-1, 4), as_numpy(target["labels"])
        g_ignore = as_numpy(target.get("ignore", np.zeros(len(g_labels), bool))).astype(bool)
        for label in np.union1d(np.unique(p_labels), np.unique(g_labels)).astype(int):
            if not 1 <= label <= num_classes:
                continue
            mine, theirs = p_labels == label, g_labels == label
            positives[label - 1] += int((theirs & ~g_ignore).sum())
            if mine.any():
                scores[label - 1].append(p_scores[mine])
                outcomes[label - 1].append(match_image(p_boxes[mine].reshape(-1, 4), p_scores[mine],
                                                       g_boxes[theirs], g_ignore[theirs], iou_threshold))
    return [_curve(scores[c], outcomes[c], int(positives[c])) for c in range(num_classes)]


def _curve(scores: list[np.ndarray], outcomes: list[np.ndarray], num_positives: int) -> ClassCurve:
    if not scores:
        empty = np.zeros(0)
        return ClassCurve(empty, empty, empty, num_positives)
    all_scores, all_outcomes = np.concatenate(scores), np.concatenate(outcomes)
    counted = all_outcomes != IGNORED
    all_scores, all_outcomes = all_scores[counted], all_outcomes[counted]
    order = np.argsort(-all_scores, kind="stable")
    tp = np.cumsum(all_outcomes[order] == TP)
    fp = np.cumsum(all_outcomes[order] == FP)
    precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    recall = tp / max(num_positives, 1) if num_positives else np.zeros_like(precision, dtype=float)
    return ClassCurve(all_scores[order], precision, recall, num_positives)


def ap_11_point(curve: ClassCurve) -> float:
    """VOC2007: mean over recall levels 0, 0.1, ..., 1 of the best precision at that recall or more,
    summed as the devkit does (``ap=ap+p/11``)."""
    if curve.num_positives == 0:
        return float("nan")
    ap = 0.0
    for level in VOC07_RECALL_LEVELS:
        reached = curve.recall >= level
        ap += (float(curve.precision[reached].max()) if reached.any() else 0.0) / 11
    return ap


def ap_all_points(curve: ClassCurve) -> float:
    """VOC2010+: area under the precision-recall curve made monotonically decreasing."""
    if curve.num_positives == 0:
        return float("nan")
    recall = np.concatenate([[0.0], curve.recall, [1.0]])
    precision = np.concatenate([[0.0], curve.precision, [0.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.flatnonzero(recall[1:] != recall[:-1])
    return float(np.sum((recall[steps + 1] - recall[steps]) * precision[steps + 1]))


def best_f1_threshold(curve: ClassCurve) -> tuple[float, float]:
    """(score threshold, F1) maximising F1 = 2PR / (P + R) on this set; (1.0, 0.0) without hits."""
    if len(curve.scores) == 0 or curve.num_positives == 0:
        return 1.0, 0.0
    f1 = 2 * curve.precision * curve.recall / np.maximum(curve.precision + curve.recall, 1e-12)
    best = int(np.argmax(f1))
    return float(curve.scores[best]), float(f1[best])
