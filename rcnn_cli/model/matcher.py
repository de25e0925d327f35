"""Assigns each candidate box (anchor or proposal) to a ground-truth box by IoU."""

from __future__ import annotations

import torch
from torch import Tensor

BACKGROUND = -1
IGNORE = -2


class Matcher:
    """IoU matcher over a padded batch.

    A candidate whose best IoU is >= ``high_threshold`` is matched to that ground truth,
    below ``low_threshold`` it is background (``BACKGROUND``), in between it is ignored
    (``IGNORE``). With ``allow_low_quality_matches`` each ground truth also claims the
    candidates it overlaps most (ties included), so that no object goes without a positive,
    as the Faster R-CNN paper does for the RPN.

    Args:
        high_threshold: foreground IoU (RPN 0.7, box head 0.5).
        low_threshold: background IoU (RPN 0.3, box head 0.5).
        allow_low_quality_matches: see above (True for the RPN).
    """

    def __init__(self, high_threshold: float, low_threshold: float, allow_low_quality_matches: bool = False):
        if low_threshold > high_threshold:
            raise ValueError("low_threshold must not exceed high_threshold")
        self.high_threshold = high_threshold
        self.low_threshold = low_threshold
        self.allow_low_quality_matches = allow_low_quality_matches

    def __call__(self, iou: Tensor, gt_valid: Tensor) -> Tensor:
        """iou: (B, G, N) ground truth x candidates; gt_valid: (B, G) bool (False for padding).

        Returns (B, N) int64: index of the matched ground truth, or BACKGROUND / IGNORE.
        """
        batch, _, num_candidates = iou.shape
        if iou.shape[1] == 0:
            return iou.new_full((batch, num_candidates), BACKGROUND, dtype=torch.int64)
        iou = iou.masked_fill(~gt_valid[:, :, None], -1.0)
        best_iou, matches = iou.max(dim=1)
        original = matches.clone() if self.allow_low_quality_matches else None
        matches[best_iou < self.high_threshold] = IGNORE
        matches[best_iou < self.low_threshold] = BACKGROUND
        if original is not None:
            # Each gt's best candidates (ties too); gts that touch nothing claim nothing.
            best_per_gt = iou.max(dim=2, keepdim=True).values
            is_best = (iou == best_per_gt) & (best_per_gt > 0)
            claimed = is_best.any(dim=1)
            matches = torch.where(claimed, original, matches)
        return matches
