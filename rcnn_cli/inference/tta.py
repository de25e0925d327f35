"""Test-time augmentation (``model.tta=true``, ``--tta``): every picture is detected in several views, each
view's boxes are mapped back to the picture, and the views are fused by weighted box fusion
(ops/fusion.py), so a box found in every view keeps its score and one found in a single view loses most of it.

The views: each factor of ``model.tta_scales``, with and without a horizontal flip (2 x scales passes).
A scale factor multiplies the size the model resizes pictures to, ``model.min_size`` (the short side)
and ``model.max_size`` (the cap on the long side) together: 1.0 is the model's usual pass, 1.2 runs at
min_size x 1.2. Resizing the picture itself would do nothing, since the model resizes every input to
min_size; so scaling needs the model's own transform, which an exported file has baked in: TTA runs
checkpoints and torchvision files only.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import UsageError
from ..ops.fusion import fuse_detections

DetectFn = Callable[[list[Tensor]], list[dict[str, Tensor]]]


@dataclass(frozen=True)
class FusionRule:
    """How fused detections are kept: the model's own thresholds, so that TTA's and an ensemble's output
    obeys what the model's does."""

    score_threshold: float
    max_detections: int
    agnostic_nms_iou: float | None = None     # model.box_nms_agnostic: box_nms_thresh; else None

    @classmethod
    def of(cls, model_cfg) -> FusionRule:
        agnostic = bool(model_cfg["box_nms_agnostic"])
        return cls(float(model_cfg["box_score_thresh"]), int(model_cfg["box_detections_per_img"]),
                   float(model_cfg["box_nms_thresh"]) if agnostic else None)

    def fuse(self, views: Sequence[dict[str, Tensor]]) -> dict[str, Tensor]:
        return fuse_detections(views, self.score_threshold, self.max_detections,
                               agnostic_nms_iou=self.agnostic_nms_iou)


def refuse_exported_tta(weights: str) -> None:
    raise UsageError(f"model.tta=true: {weights} is an exported file, whose resize is baked in, so its scales "
                     "cannot change; run --tta with the checkpoint it was exported from")


def tta_detect(detect: DetectFn, transform, scales: Sequence[float], rule: FusionRule) -> DetectFn:
    """``detect`` (the model's, any precision) run over every view of each batch and fused per picture.
    transform: the model's ImageTransform, whose sizes each scale changes for its passes (one batch at a
    time: a lock keeps concurrent callers, e.g. rcnn serve's threads, from sharing a changed size)."""
    base_min, base_max = float(transform.min_size[-1]), float(transform.max_size)
    lock = threading.Lock()

    def detect_views(images: list[Tensor]) -> list[dict[str, Tensor]]:
        views: list[list[dict[str, Tensor]]] = [[] for _ in images]
        with lock:
            for scale in scales:
                with _sizes(transform, round(base_min * scale), round(base_max * scale)):
                    for flip in (False, True):
                        found = detect([image.flip(-1) if flip else image for image in images])
                        for image_views, image, detection in zip(views, images, found, strict=True):
                            image_views.append(_unflipped(detection, image.shape[-1]) if flip else detection)
        return [rule.fuse(image_views) for image_views in views]

    return detect_views


def flip_boxes(boxes: Tensor, width: int) -> Tensor:
    """xyxy boxes of a horizontally flipped picture of ``width`` px -> the same boxes on the picture."""
    return torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1)


def _unflipped(detection: dict[str, Tensor], width: int) -> dict[str, Tensor]:
    return {**detection, "boxes": flip_boxes(detection["boxes"], width)}


@contextmanager
def _sizes(transform, min_size: int, max_size: int) -> Iterator[None]:
    saved = transform.min_size, transform.max_size
    transform.min_size, transform.max_size = (min_size,), max_size
    try:
        yield
    finally:
        transform.min_size, transform.max_size = saved


def view_count(scales: Sequence[float]) -> int:
    return 2 * len(scales)


def with_tta(predictor, model_cfg) -> None:
    """Makes ``predictor`` (inference/predictor.Predictor of a torch model) detect with TTA, as model_cfg says."""
    scales = [float(scale) for scale in model_cfg["tta_scales"]]
    predictor.detect = tta_detect(predictor.detect, predictor.model.transform, scales, FusionRule.of(model_cfg))
    predictor.runs_as += f" + TTA ({view_count(scales)} views)"
