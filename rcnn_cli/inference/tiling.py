"""Tiled inference for pictures far larger than the model's input (drone, satellite, slide scans):
overlapping tiles at native resolution, run in batches through the normal detect function (any
precision, exported files too), plus one pass over the whole picture for objects larger than a
tile; boxes mapped back and merged.

Merge rule, in this order:
    1. a tile's box that touches one of the tile's inner edges (an edge inside the picture, within
       ``SEAM_MARGIN`` px) is a cut object: dropped, because the overlap shows that object whole in
       the neighbouring tile (objects up to ``overlap x tile`` wide are seen whole at least once);
    2. class-aware NMS at ``nms_iou`` over the tiles' boxes and the whole-picture pass together, so an
       object seen by two tiles (inside their overlap) or by a tile and the whole pass is kept once,
       with its best score (one NMS over all classes with ``nms_agnostic``, as the model's
       ``model.box_nms_agnostic``: two classes on one object seen by two tiles are also kept once).

The slicing is ours (a dozen lines): SAHI's slicer would fit, but its merge works on its own
prediction objects one image at a time, while ours batches tiles through the same detect call.

Shape shorthand: T tiles per picture; N boxes; each tile (3, t, t) or smaller at the borders.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torchvision.ops import batched_nms

from ..ops.windows import tile_windows

SEAM_MARGIN = 2.0         # pixels from an inner tile edge that count as touching it

DetectFn = Callable[[list[Tensor]], list[dict[str, Tensor]]]



def detect_tiled(detect: DetectFn, image: Tensor, tile: int, overlap: float, batch_size: int,
                 nms_iou: float = 0.5, whole_pass: bool = True, nms_agnostic: bool = False) -> dict[str, Tensor]:
    """Detections on a (3, H, W) picture in its own pixels, as ``detect`` returns for one image."""
    height, width = image.shape[-2:]
    windows = tile_windows(height, width, tile, overlap)
    boxes, scores, labels = [], [], []
    for start in range(0, len(windows), batch_size):
        chunk = windows[start:start + batch_size]
        for window, found in zip(chunk, detect([image[:, y0:y1, x0:x1] for x0, y0, x1, y1 in chunk])):
            keep = ~touches_inner_edge(found["boxes"], window, height, width)
            offset = torch.tensor([window[0], window[1], window[0], window[1]], dtype=found["boxes"].dtype)
            boxes.append(found["boxes"][keep].cpu() + offset)
            scores.append(found["scores"][keep].cpu())
            labels.append(found["labels"][keep].cpu())
    if whole_pass and len(windows) > 1:
        found = detect([image])[0]
        boxes, scores, labels = boxes + [found["boxes"].cpu()], scores + [found["scores"].cpu()], \
            labels + [found["labels"].cpu()]
    boxes, scores, labels = torch.cat(boxes), torch.cat(scores), torch.cat(labels)
    kept = batched_nms(boxes.float(), scores.float(), torch.zeros_like(labels) if nms_agnostic else labels, nms_iou)
    return {"boxes": boxes[kept], "scores": scores[kept], "labels": labels[kept]}


def touches_inner_edge(boxes: Tensor, window: tuple[int, int, int, int], height: int, width: int) -> Tensor:
    """(N,) True for boxes (tile pixels) within SEAM_MARGIN of a tile edge that is not the picture's."""
    x0, y0, x1, y1 = window
    tile_w, tile_h = x1 - x0, y1 - y0
    inner = [(x0 > 0, boxes[:, 0] <= SEAM_MARGIN), (y0 > 0, boxes[:, 1] <= SEAM_MARGIN),
             (x1 < width, boxes[:, 2] >= tile_w - SEAM_MARGIN), (y1 < height, boxes[:, 3] >= tile_h - SEAM_MARGIN)]
    touching = torch.zeros(len(boxes), dtype=torch.bool)
    for is_inner, near in inner:
        if is_inner:
            touching |= near.cpu()
    return touching
