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


# Reference scores closer than this are ties: another runtime's rounding (ONNX against torch
# differed by up to 2.7e-06 on trained models, docs/speed.md "Export parity") may order them either way.
TIE_TOLERANCE = 1e-5


@dataclass
class Agreement:
    """Per-detection comparison of a candidate's outputs with a reference's.

    compared: reference detections scoring above the threshold (+ score tolerance, so that a
    detection sitting on the threshold may fall either side); tied: those whose score another
    reference detection of the image shares (within ``TIE_TOLERANCE``): which of tied boxes survive
    NMS and the top-N cut is decided by rounding, so either runtime is right, and they are only
    paired with a candidate detection of the same score (within the score tolerance), any box;
    unmatched: the rest with no candidate detection of the same label at IoU >= 0.5, and tied
    ones with no candidate left at their score. max_box_diff (pixels) and max_score_diff over the
    matched pairs; map50: ``agreement_map50`` of everything but the tied pairs.
    """

    compared: int = 0
    unmatched: int = 0
    tied: int = 0
    max_box_diff: float = 0.0
    max_score_diff: float = 0.0
    map50: float | None = None
    images: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def matched(self) -> int:
        return self.compared - self.unmatched - self.tied

    def passes(self, box_tol: float, score_tol: float, min_map50: float) -> bool:
        """A comparison of nothing (the reference found no detection) proves nothing: it fails."""
        return (self.unmatched == 0 and self.max_box_diff <= box_tol and self.max_score_diff <= score_tol
                and self.agrees(min_map50))

    def agrees(self, min_map50: float) -> bool:
        """Judged on detections alone: at least one reference detection compared, and mAP50 against
        the reference at least ``min_map50`` (no mAP50 only when every one compared was tied in
        score, each then paired with a candidate of its score)."""
        if self.compared == 0:
            return False
        return self.unmatched == 0 if self.map50 is None else self.map50 >= min_map50


def compare_detections(reference: list[dict], candidate: list[dict], num_classes: int,
                       score_threshold: float, score_tol: float = 1e-3) -> Agreement:
    """reference, candidate: per image ``boxes`` (N, 4) xyxy, ``scores`` (N,), ``labels`` (N,).

    Each untied reference detection above the threshold is paired with the candidate detection of
    the same label that overlaps it most (greedy by score, each candidate used once), so that the
    comparison does not depend on the order NMS breaks ties in; then each tied one with a left-over
    candidate detection of its score (see ``Agreement``).
    """
    result = Agreement(images=len(reference))
    kept_reference, kept_candidate = [], []
    for ref, cand in zip(reference, candidate):
        ref_boxes, ref_scores, ref_labels = (as_numpy(ref[k]) for k in ("boxes", "scores", "labels"))
        cand_boxes, cand_scores, cand_labels = (as_numpy(cand[k]) for k in ("boxes", "scores", "labels"))
        used = np.zeros(len(cand_boxes), dtype=bool)
        iou = pairwise_iou(ref_boxes.reshape(-1, 4), cand_boxes.reshape(-1, 4))
        tied = []
        for i in np.argsort(-ref_scores, kind="stable"):
            if ref_scores[i] <= score_threshold + score_tol:
                continue
            result.compared += 1
            if _is_tied(ref_scores, i):
                tied.append(i)
                continue
            overlap = np.where((cand_labels == ref_labels[i]) & ~used, iou[i], -1.0)
            j = int(np.argmax(overlap)) if len(overlap) else -1
            if j < 0 or overlap[j] < 0.5:
                result.unmatched += 1
                continue
            used[j] = True
            result.max_box_diff = max(result.max_box_diff, float(np.abs(ref_boxes[i] - cand_boxes[j]).max()))
            result.max_score_diff = max(result.max_score_diff, float(abs(ref_scores[i] - cand_scores[j])))
        cand_tied = []
        for i in tied:
            # a left-over candidate at this score, preferring the same label, then the most overlap
            fits = ~used & (np.abs(cand_scores - ref_scores[i]) <= score_tol)
            if not fits.any():
                result.unmatched += 1
                continue
            j = int(np.argmax(np.where(fits, (cand_labels == ref_labels[i]) * 2.0 + iou[i], -1.0)))
            used[j] = True
            cand_tied.append(j)
        result.tied += len(cand_tied)
        kept_reference.append(_without(ref, tied))
        kept_candidate.append(_without(cand, cand_tied))
    result.map50 = agreement_map50(kept_reference, kept_candidate, num_classes)
    return result


def _is_tied(scores: np.ndarray, i: int) -> bool:
    others = np.delete(scores, i)
    return bool(len(others)) and float(np.abs(others - scores[i]).min()) <= TIE_TOLERANCE


def _without(detections: dict, indices: list[int]) -> dict:
    keep = np.setdiff1d(np.arange(len(as_numpy(detections["scores"]))), indices)
    return {k: as_numpy(v)[keep] for k, v in detections.items() if k in ("boxes", "scores", "labels")}
