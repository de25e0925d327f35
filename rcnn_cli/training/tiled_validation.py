"""Validation of a run trained on tiles (``dataset.tile``): each validation picture stays whole and is
detected by ``inference.tiling.detect_tiled`` with the training tile and overlap, the very function
``rcnn eval --tile`` and ``rcnn predict --tile`` use, so val/map is what those report on the picture.
The validation loss is the loss of those same tile forwards against the picture's boxes cut by the
training rule (``data.tiles.cut_boxes``); the whole-picture pass of ``detect_tiled`` adds no loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..data.pipeline.tiles import cut_boxes
from ..inference.tiling import detect_tiled
from ..ops.windows import tile_windows


@dataclass(frozen=True)
class Tiling:
    tile: int
    overlap: float
    min_visibility: float
    batch_size: int


class _TileLossDetect:
    """The ``detect`` function handed to ``detect_tiled``: it is called with the picture's windows in
    grid order (``tile_windows``), then with the whole picture; the window calls also give losses."""

    def __init__(self, model, targets: list[dict[str, Tensor]]):
        self.model, self.pending, self.losses = model, list(targets), []

    def __call__(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        if not self.pending:                 # the whole-picture pass: detections only
            return self.model(images)
        targets, self.pending = self.pending[:len(images)], self.pending[len(images):]
        losses, detections = self.model.forward_with_losses(images, targets)
        self.losses.append((float(sum(losses.values())), len(images)))
        return detections

    def mean_loss(self) -> float:
        total, count = map(sum, zip(*self.losses)) if self.losses else (0.0, 0)
        return total / max(count, 1)


def window_targets(target: dict[str, Tensor], height: int, width: int, tiling: Tiling
                   ) -> list[dict[str, Tensor]]:
    """The picture's boxes cut for each window of its tile grid, in tile pixels."""
    boxes = target["boxes"].cpu().numpy().astype(np.float32)
    out = []
    for window in tile_windows(height, width, tiling.tile, tiling.overlap):
        kept, keep = cut_boxes(boxes, window, tiling.min_visibility)
        out.append({"boxes": torch.from_numpy(kept).to(target["boxes"].device),
                    "labels": target["labels"][torch.from_numpy(keep).to(target["labels"].device)]})
    return out


def tiled_forward(model, images: list[Tensor], targets: list[dict[str, Tensor]], tiling: Tiling, nms_iou: float
                  ) -> tuple[float, list[dict[str, Tensor]]]:
    """(mean over the pictures of their tiles' mean loss, detections per picture in its own pixels)."""
    losses, detections = [], []
    for image, target in zip(images, targets, strict=True):
        detect = _TileLossDetect(model, window_targets(target, *image.shape[-2:], tiling))
        detections.append(detect_tiled(detect, image, tiling.tile, tiling.overlap, tiling.batch_size, nms_iou,
                                       nms_agnostic=model.roi_heads.nms_agnostic))
        losses.append(detect.mean_loss())
    return sum(losses) / max(len(losses), 1), detections
