"""VOC AP50, written here: VOC2007's 11-point and VOC2010+'s all-point interpolation, with
``difficult`` boxes ignored (a detection on one is neither a hit nor a false alarm).

Matching follows the VOC devkit: a detection takes the ground-truth box it overlaps most; if
that box is already taken by a higher-scored detection, it is a false positive. That decision
depends only on detections of the same image and class, so matching runs per image and class
and the precision-recall curve is built once per class from all scores.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .matching import as_numpy, pairwise_iou

TP, FP, IGNORED = 1, 0, -1


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

    boxes: (D, 4) xyxy, scores: (D,), gt_boxes: (G, 4) xyxy, gt_ignore: (G,) bool.
    """
    outcome = np.full(len(boxes), FP, np.int8)
    if len(boxes) == 0 or len(gt_boxes) == 0:
        return outcome
    iou = pairwise_iou(boxes, gt_boxes)               # (D, G)
    best_gt, best_iou = iou.argmax(axis=1), iou.max(axis=1)
    taken = np.zeros(len(gt_boxes), bool)
    for d in np.argsort(-scores, kind="stable"):
        if best_iou[d] < iou_threshold:
            continue
        g = best_gt[d]
        if gt_ignore[g]:
            outcome[d] = IGNORED
        elif not taken[g]:
            outcome[d], taken[g] = TP, True
    return outcome


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
    """VOC2007: mean over recall levels 0, 0.1, ..., 1 of the best precision at that recall or more."""
    if curve.num_positives == 0:
        return float("nan")
    levels = np.linspace(0, 1, 11)
    best = [curve.precision[curve.recall >= t].max() if (curve.recall >= t).any() else 0.0 for t in levels]
    return float(np.mean(best))


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
