"""Assigns each candidate box (anchor or proposal) to a ground-truth box by IoU.

Shape shorthand: B: images; G: ground-truth boxes per image (padded); N: candidates (A anchors, or P proposals per
    image).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..ops.boxes import pairwise_iou

BACKGROUND = -1
IGNORE = -2

# IoU values ``Matcher.match`` holds at once (images x ground truth x candidates). An 800 px image has
# ~160k anchors, so a batch of 2 with 500 objects each would otherwise hold 160M IoUs and, with the
# intermediates of the IoU arithmetic, several GB; chunks of 2^22 pairs keep that near 150 MB.
MAX_IOU_PAIRS = 1 << 22


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
        return self._label(*self._reduce(iou, gt_valid))

    def match(self, gt_boxes: Tensor, gt_valid: Tensor, candidates: Tensor,
              max_pairs: int = MAX_IOU_PAIRS) -> Tensor:
        """``self(pairwise_iou(gt_boxes, candidates), gt_valid)``, with the IoU computed for a slice
        of the ground truth at a time (at most ``max_pairs`` values): same result, bounded memory.

        gt_boxes: (B, G, 4); gt_valid: (B, G); candidates: (N, 4) shared or (B, N, 4) per image.
        """
        batch, num_gt = gt_valid.shape
        num_candidates = candidates.shape[-2]
        if num_gt == 0:
            return gt_boxes.new_full((batch, num_candidates), BACKGROUND, dtype=torch.int64)
        step = max(1, max_pairs // max(batch * num_candidates, 1))
        best = arg = claimed = None
        for start in range(0, num_gt, step):
            stop = min(start + step, num_gt)
            iou = pairwise_iou(gt_boxes[:, start:stop], candidates)
            chunk_best, chunk_arg, chunk_claimed = self._reduce(iou, gt_valid[:, start:stop])
            if best is None:
                best, arg, claimed = chunk_best, chunk_arg, chunk_claimed
                continue
            # torch's max keeps the first maximum (a NaN counts as one): an equal later slice loses.
            better = (chunk_best > best) | (chunk_best.isnan() & ~best.isnan())
            best = torch.where(better, chunk_best, best)
            arg = torch.where(better, chunk_arg + start, arg)
            claimed = claimed | chunk_claimed if claimed is not None else None
        return self._label(best, arg, claimed)

    def _reduce(self, iou: Tensor, gt_valid: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """iou: (B, G, N) -> best IoU and its ground truth per candidate, (B, N) each, and (B, N)
        whether some ground truth has the candidate among its best (None without low-quality matches)."""
        iou = iou.masked_fill(~gt_valid[:, :, None], -1.0)
        best_iou, matches = iou.max(dim=1)
        claimed = None
        if self.allow_low_quality_matches:
            # Each gt's best candidates (ties too); gts that touch nothing claim nothing.
            best_per_gt = iou.max(dim=2, keepdim=True).values
            claimed = ((iou == best_per_gt) & (best_per_gt > 0)).any(dim=1)
        return best_iou, matches, claimed

    def _label(self, best_iou: Tensor, matches: Tensor, claimed: Tensor | None) -> Tensor:
        labelled = matches.clone()
        labelled[best_iou < self.high_threshold] = IGNORE
        labelled[best_iou < self.low_threshold] = BACKGROUND
        return torch.where(claimed, matches, labelled) if claimed is not None else labelled
