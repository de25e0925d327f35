"""Weighted box fusion (Solovyev, Wang and Gabruseva 2021, "Weighted boxes fusion: combining boxes for
object detection models"), written from the paper's description.

Unlike NMS, which keeps one box of a cluster and drops the rest, WBF averages every box of the cluster,
weighted by score, so boxes that several views (augmentations, checkpoints, folds) agree on get better
coordinates, and boxes that only one view found get a lower score. The paper's algorithm, per class:

1. every box of every view goes into one list, sorted by decreasing score;
2. each box joins the fused box it overlaps most, if that IoU is above ``iou_threshold``, else it starts
   a new cluster; the fused box is recomputed after each join, so later boxes match the cluster's
   current average, not its first box;
3. fused coordinates are the score-weighted mean of the cluster's boxes, and the fused score is the mean
   score of the cluster times ``min(T, N) / N``, with T boxes in the cluster and N views.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .boxes import batched_nms, pairwise_iou

# The paper's best threshold for fusing the boxes of several models (its table 1 sweeps 0.5 to 0.7).
DEFAULT_IOU_THRESHOLD = 0.55


def weighted_box_fusion(
    per_view_boxes: Sequence[Tensor],
    per_view_scores: Sequence[Tensor],
    per_view_labels: Sequence[Tensor],
    iou_threshold: float = DEFAULT_IOU_THRESHOLD,
    score_threshold: float = 0.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """Fuse the detections of N views of one image into one set.

    per_view_boxes: N tensors (K_i, 4) xyxy in the same pixel frame; per_view_scores: N tensors (K_i,);
    per_view_labels: N tensors (K_i,) int. A view that found nothing still counts in N.
    Boxes scoring below ``score_threshold``, or zero, are left out (a zero score carries no weight).
    Returns (boxes (M, 4) float32, scores (M,), labels (M,) int64), by decreasing score.
    """
    n_views = len(per_view_boxes)
    if n_views == 0 or not n_views == len(per_view_scores) == len(per_view_labels):
        raise ValueError(f"weighted_box_fusion needs one boxes, scores and labels tensor per view; got "
                         f"{len(per_view_boxes)}, {len(per_view_scores)} and {len(per_view_labels)}")
    boxes = torch.cat([b.reshape(-1, 4).float() for b in per_view_boxes])
    scores = torch.cat([s.reshape(-1).float() for s in per_view_scores])
    labels = torch.cat([lab.reshape(-1).long() for lab in per_view_labels])
    keep = (scores > 0) & (scores >= score_threshold)
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]

    fused_boxes, fused_scores, fused_labels = [], [], []
    for label in labels.unique().tolist():
        in_class = labels == label
        class_boxes, class_scores = _fuse_one_class(boxes[in_class], scores[in_class], iou_threshold, n_views)
        fused_boxes.append(class_boxes)
        fused_scores.append(class_scores)
        fused_labels.append(torch.full_like(class_scores, label, dtype=torch.int64))
    if not fused_boxes:
        return boxes.new_zeros((0, 4)), scores.new_zeros(0), labels.new_zeros(0)
    boxes, scores, labels = torch.cat(fused_boxes), torch.cat(fused_scores), torch.cat(fused_labels)
    order = torch.argsort(scores, descending=True, stable=True)
    return boxes[order], scores[order], labels[order]


def _fuse_one_class(boxes: Tensor, scores: Tensor, iou_threshold: float, n_views: int) -> tuple[Tensor, Tensor]:
    """The paper's loop for the boxes of one class: one pass in score order, each step compares one box with
    all current fused boxes at once (so the work is linear in boxes times clusters, with one tensor op per box)."""
    order = torch.argsort(scores, descending=True, stable=True)
    boxes, scores = boxes[order], scores[order]
    total = boxes.shape[0]
    weighted_sum = boxes.new_zeros((total, 4))     # sum of score * box per cluster
    score_sum = scores.new_zeros(total)
    count = scores.new_zeros(total)
    fused = boxes.new_zeros((total, 4))
    clusters = 0
    for i in range(total):
        target = clusters
        if clusters:
            ious = pairwise_iou(boxes[i:i + 1], fused[:clusters])[0]
            best = int(torch.argmax(ious))      # ties: the earliest (highest-scoring) cluster
            if ious[best] > iou_threshold:
                target = best
        if target == clusters:
            clusters += 1
        weighted_sum[target] += scores[i] * boxes[i]
        score_sum[target] += scores[i]
        count[target] += 1
        fused[target] = weighted_sum[target] / score_sum[target]
    count = count[:clusters]
    mean_score = score_sum[:clusters] / count
    return fused[:clusters], mean_score * count.clamp(max=n_views) / n_views


def fuse_detections(views: Sequence[dict[str, Tensor]], score_threshold: float, max_detections: int,
                    iou_threshold: float = DEFAULT_IOU_THRESHOLD,
                    agnostic_nms_iou: float | None = None) -> dict[str, Tensor]:
    """Several detectors' ``{"boxes", "scores", "labels"}`` for one image (same pixels) -> one, as a
    detector returns it: fused by WBF, kept above ``score_threshold`` (the detector's rule holds for
    fused scores too), then, with ``agnostic_nms_iou``, one NMS over all classes (WBF fuses per class,
    so two classes on one object would both survive it), and the best ``max_detections``."""
    boxes, scores, labels = weighted_box_fusion([v["boxes"].cpu() for v in views], [v["scores"].cpu() for v in views],
                                                [v["labels"].cpu() for v in views], iou_threshold)
    keep = scores > score_threshold
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    if agnostic_nms_iou is not None:
        kept = batched_nms(boxes, scores, torch.zeros_like(labels), agnostic_nms_iou)
        boxes, scores, labels = boxes[kept], scores[kept], labels[kept]
    return {"boxes": boxes[:max_detections], "scores": scores[:max_detections], "labels": labels[:max_detections]}
