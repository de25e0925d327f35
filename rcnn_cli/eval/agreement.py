"""How closely one detector's outputs reproduce another's, judged on detections.

Used to prove that a faster path (folded BatchNorm, bf16) or an exported file (ONNX,
TorchScript) detects what the exact eager model detects.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .matching import as_numpy, pairwise_iou


def agreement_map50(reference: list[dict], candidate: list[dict], num_classes: int) -> float | None:
    """mAP50 of ``candidate``'s detections scored against ``reference``'s as ground truth; None
    when the reference found nothing (random weights: pass model.weights=... or a low
    model.box_score_thresh)."""
    from .coco import coco_metrics

    if not any(len(r["boxes"]) for r in reference):
        return None
    truth = [{"boxes": r["boxes"], "labels": r["labels"]} for r in reference]
    return coco_metrics(candidate, truth, num_classes)["map_50"]


@dataclass
class Agreement:
    """Per-detection comparison of a candidate's outputs with a reference's.

    compared: reference detections scoring above the threshold (+ score tolerance, so that a
    detection sitting on the threshold may fall either side); unmatched: those with no
    candidate detection of the same label at IoU >= 0.5; max_box_diff (pixels) and
    max_score_diff over the matched pairs; map50: ``agreement_map50`` of everything.
    """

    compared: int = 0
    unmatched: int = 0
    max_box_diff: float = 0.0
    max_score_diff: float = 0.0
    map50: float | None = None
    images: int = 0
    notes: list[str] = field(default_factory=list)

    def passes(self, box_tol: float, score_tol: float, min_map50: float) -> bool:
        return (self.unmatched == 0 and self.max_box_diff <= box_tol and self.max_score_diff <= score_tol
                and (self.map50 is None or self.map50 >= min_map50))


def compare_detections(reference: list[dict], candidate: list[dict], num_classes: int,
                       score_threshold: float, score_tol: float = 1e-3) -> Agreement:
    """reference, candidate: per image ``boxes`` (N, 4) xyxy, ``scores`` (N,), ``labels`` (N,).

    Each reference detection above the threshold is paired with the candidate detection of the
    same label that overlaps it most (greedy by score, each candidate used once), so that the
    comparison does not depend on the order NMS breaks ties in.
    """
    result = Agreement(images=len(reference), map50=agreement_map50(reference, candidate, num_classes))
    for ref, cand in zip(reference, candidate):
        ref_boxes, ref_scores, ref_labels = (as_numpy(ref[k]) for k in ("boxes", "scores", "labels"))
        cand_boxes, cand_scores, cand_labels = (as_numpy(cand[k]) for k in ("boxes", "scores", "labels"))
        used = np.zeros(len(cand_boxes), dtype=bool)
        iou = pairwise_iou(ref_boxes.reshape(-1, 4), cand_boxes.reshape(-1, 4))
        for i in np.argsort(-ref_scores, kind="stable"):
            if ref_scores[i] <= score_threshold + score_tol:
                continue
            result.compared += 1
            overlap = np.where((cand_labels == ref_labels[i]) & ~used, iou[i], -1.0)
            j = int(np.argmax(overlap)) if len(overlap) else -1
            if j < 0 or overlap[j] < 0.5:
                result.unmatched += 1
                continue
            used[j] = True
            result.max_box_diff = max(result.max_box_diff, float(np.abs(ref_boxes[i] - cand_boxes[j]).max()))
            result.max_score_diff = max(result.max_score_diff, float(abs(ref_scores[i] - cand_scores[j])))
    return result
