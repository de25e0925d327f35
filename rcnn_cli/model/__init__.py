"""Faster R-CNN, one concept per module: anchors, rpn_head, rpn, matcher, sampler, box_coder,
roi_pool, box_head, roi_heads, transform, backbones; ``factory`` builds it from a config."""

from .factory import LoadedDetector, create_detector, read_checkpoint
from .faster_rcnn import FasterRCNN, build_model
from .weights import WeightsError

__all__ = ["FasterRCNN", "LoadedDetector", "WeightsError", "build_model", "create_detector", "read_checkpoint"]
