"""Box arithmetic on batched tensors. Boxes are ``xyxy`` in pixels throughout."""

from __future__ import annotations

import torch
import torchvision
from torch import Tensor


def box_area(boxes: Tensor) -> Tensor:
    """boxes: (..., 4) xyxy -> (...,) areas."""
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def pairwise_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """IoU of every pair, batched over leading dims.

    boxes1: (..., N, 4), boxes2: (..., M, 4) xyxy (leading dims broadcast) -> (..., N, M).
    Same arithmetic as ``torchvision.ops.box_iou``, so results agree bit for bit.
    """
    area1 = box_area(boxes1)
    area2 = box_area(boxes2)
    lt = torch.max(boxes1[..., :, None, :2], boxes2[..., None, :, :2])
    rb = torch.min(boxes1[..., :, None, 2:], boxes2[..., None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area1[..., :, None] + area2[..., None, :] - inter
    return inter / union


def clip_boxes(boxes: Tensor, image_sizes: Tensor) -> Tensor:
    """Clip boxes to their image.

    boxes: (B, ..., 4) xyxy; image_sizes: (B, 2) as (height, width) -> (B, ..., 4).
    """
    shape = (boxes.shape[0],) + (1,) * (boxes.dim() - 2)
    height = image_sizes[:, 0].to(boxes.dtype).view(shape)
    width = image_sizes[:, 1].to(boxes.dtype).view(shape)
    x1 = torch.minimum(boxes[..., 0].clamp(min=0), width)
    y1 = torch.minimum(boxes[..., 1].clamp(min=0), height)
    x2 = torch.minimum(boxes[..., 2].clamp(min=0), width)
    y2 = torch.minimum(boxes[..., 3].clamp(min=0), height)
    return torch.stack((x1, y1, x2, y2), dim=-1)


def is_large_enough(boxes: Tensor, min_size: float) -> Tensor:
    """boxes: (..., 4) -> (...,) bool, True where both sides are >= min_size."""
    return ((boxes[..., 2] - boxes[..., 0]) >= min_size) & ((boxes[..., 3] - boxes[..., 1]) >= min_size)


def batched_nms(boxes: Tensor, scores: Tensor, groups: Tensor, iou_threshold: float) -> Tensor:
    """NMS run independently inside each group (e.g. image x class) in one call.

    boxes: (N, 4) xyxy, scores: (N,), groups: (N,) int64 -> kept indices (K,), by decreasing score.
    torchvision picks the fastest strategy per device (one offset NMS, or one NMS per group on
    large CPU inputs, where the single call is quadratic in the total count).
    """
    return torchvision.ops.batched_nms(boxes, scores, groups, iou_threshold)


def rank_in_group(sorted_groups: Tensor, num_groups: int) -> Tensor:
    """Position of each element within its group.

    sorted_groups: (N,) int64, non-decreasing -> (N,) int64 ranks starting at 0 in every group.
    """
    counts = torch.bincount(sorted_groups, minlength=num_groups)
    starts = torch.cumsum(counts, 0) - counts
    return torch.arange(sorted_groups.numel(), device=sorted_groups.device) - starts[sorted_groups]


def top_n_per_group(scores_order: Tensor, groups: Tensor, num_groups: int, n: int) -> Tensor:
    """Indices of the first ``n`` elements of each group, keeping the given order inside groups.

    scores_order: (K,) indices already sorted by decreasing score; groups: (N,) group of each
    element -> (K',) indices, grouped by group id, each group in decreasing score order.
    """
    ordered_groups = groups[scores_order]
    by_group = torch.sort(ordered_groups, stable=True).indices
    kept = scores_order[by_group]
    rank = rank_in_group(groups[kept], num_groups)
    return kept[rank < n]
