"""The detector's inference path for one image, written so that tracing keeps every size dynamic.

The training/eval model batches images and uses Python numbers for sizes (fast in eager mode);
a tracer would freeze those numbers into the graph. Here every size is read from tensor shapes
with tensor arithmetic, so an exported graph accepts images of any size and orientation. The
parts (backbone, heads, box coders, anchors, RoI pooling) are the model's own modules; only the
glue between them differs, and it follows the eager path step for step (same rounding of the
resized size, same top-k per level, same NMS grouping) so that detections agree.

The exporter names each node after the modules whose calls it ran inside ("/backbone/body/layer1/...",
"/head_2/...", "/box_head/..."); glue outside any module would be named at the root ("/TopK_3"). So
each piece of glue runs inside a ``Scope`` named after its stage (transform, anchor_generator,
proposals, postprocess): the graph, its int8 twins and OpenVINO's IR then say which stage every node
belongs to, which is what benchmark/exported_profile.py reads. The scopes compute nothing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import batched_nms, nms

from ..formats import INPUT_DTYPES
from ..model.faster_rcnn import FasterRCNN
from ..model.roi_heads import MIN_DETECTION_SIZE
from ..model.rpn import MIN_PROPOSAL_SIZE
from ..ops.boxes import clip_boxes, is_large_enough


class Scope(nn.Module):
    """``scope(run, *args)`` is ``run(*args)``, its nodes named after the attribute holding the scope."""

    def forward(self, run, *args):
        return run(*args)


class SingleImageDetector(nn.Module):
    """``forward(image)``: image (3, H, W) uint8 0-255 (or float 0-1 with ``input_dtype="float32"``)
    -> boxes (N, 4) xyxy float32 in original pixels, scores (N,) float32, labels (N,) int64 in 1..C,
    best first, N <= ``detections_per_img``."""

    def __init__(self, model: FasterRCNN, input_dtype: str = INPUT_DTYPES[0]):
        super().__init__()
        if input_dtype not in INPUT_DTYPES:
            raise ValueError(f"input_dtype must be one of {INPUT_DTYPES}, got {input_dtype!r}")
        self.model = model.eval()
        self.input_dtype = input_dtype
        # A half backbone (export --half) runs in fp16; its features return to fp32 for the heads.
        parameter = next(model.backbone.parameters())
        self.backbone_dtype, self.device = parameter.dtype, parameter.device
        # the stages' names in the exported graph (module docstring)
        self.transform, self.anchor_generator, self.proposals, self.postprocess = Scope(), Scope(), Scope(), Scope()

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        tensor, resized_hw, original_hw = self.transform(self.preprocess, image)
        if self.device.type != "cpu":
            # sizes are computed on the CPU (shape arithmetic); boxes are clipped and scaled on the device
            resized_hw, original_hw = resized_hw.to(self.device), original_hw.to(self.device)
        features = self.model.backbone(tensor.to(self.backbone_dtype))
        if isinstance(features, Tensor):
            features = {"0": features}
        if self.backbone_dtype != torch.float32:
            features = {name: feature.float() for name, feature in features.items()}
        proposals = self.propose(list(features.values()), tensor, resized_hw)
        boxes, scores, labels = self.detect(features, proposals, resized_hw)
        return self.postprocess(self.to_original, boxes, resized_hw, original_hw), scores, labels

    @staticmethod
    def to_original(boxes: Tensor, resized_hw: Tensor, original_hw: Tensor) -> Tensor:
        ratio = (original_hw.to(torch.float32) / resized_hw.to(torch.float32)).flip(0).repeat(2)
        return boxes * ratio

    def preprocess(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """-> (1, 3, H', W') normalised, resized, zero-padded to the size multiple; resized (2,)
        and original (2,) int64 (height, width)."""
        transform = self.model.transform
        x = image.to(torch.float32) / 255 if self.input_dtype == "uint8" else image.to(torch.float32)
        x = (x - transform.image_mean) / transform.image_std
        original_hw = torch._shape_as_tensor(image)[1:]
        hw = original_hw.to(torch.float64)
        # Float64 throughout, as the eager path's Python floats, so sizes round identically.
        limits = torch.tensor([float(transform.min_size[-1]), float(transform.max_size)], dtype=torch.float64)
        scale = torch.min(limits / torch.stack([hw.min(), hw.max()]))
        resized_hw = torch.floor(hw * scale).to(torch.int64)
        x = F.interpolate(x[None], size=(resized_hw[0], resized_hw[1]), mode="bilinear", align_corners=False)
        stride = transform.size_divisible
        padded_hw = torch.div(resized_hw + (stride - 1), stride, rounding_mode="floor") * stride
        pad = padded_hw - resized_hw
        x = F.pad(x, (0, pad[1], 0, pad[0]))
        if self.model.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, resized_hw, original_hw

    def propose(self, features: list[Tensor], tensor: Tensor, resized_hw: Tensor) -> Tensor:
        """features: per level (1, C, H, W) -> proposals (P, 4) xyxy, best first."""
        rpn = self.model.rpn
        generator = rpn.anchor_generator
        padded_hw = torch._shape_as_tensor(tensor)[-2:]
        boxes, scores, levels = [], [], []
        for level, (feature, cell) in enumerate(zip(features, generator.cell_anchors)):
            logits, deltas = rpn.head([feature])
            anchors = self.anchor_generator(generator.grid_anchors, cell, torch._shape_as_tensor(feature)[-2:],
                                            padded_hw, feature.device, deltas.dtype)
            level_boxes, level_scores, top = self.proposals(self.best_of_level, logits, deltas, anchors)
            boxes.append(level_boxes)
            scores.append(level_scores)
            levels.append(torch.full_like(top, level))
        return self.proposals(self.select, boxes, scores, levels, resized_hw)

    def best_of_level(self, logits: Tensor, deltas: Tensor, anchors: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """One level's top-N anchors by objectness -> (their decoded boxes, probabilities, anchor indices)."""
        rpn = self.model.rpn
        objectness = rpn.head.objectness_score(logits)[0]
        k = torch.clamp(torch._shape_as_tensor(objectness)[0], max=rpn.pre_nms_top_n["test"])
        top_scores, top = objectness.topk(k)
        return rpn.box_coder.decode(deltas[0, top], anchors[top])[:, 0, :], torch.sigmoid(top_scores), top

    def select(self, boxes: list[Tensor], scores: list[Tensor], levels: list[Tensor], resized_hw: Tensor) -> Tensor:
        """Every level's candidates -> the proposals: clipped, large enough, NMS per level, best first."""
        rpn = self.model.rpn
        boxes = clip_boxes(torch.cat(boxes)[None], resized_hw[None])[0]
        scores, levels = torch.cat(scores), torch.cat(levels)
        keep = torch.where(is_large_enough(boxes, MIN_PROPOSAL_SIZE) & (scores >= rpn.score_thresh))[0]
        boxes, scores, levels = boxes[keep], scores[keep], levels[keep]
        kept = batched_nms(boxes, scores, levels, rpn.nms_thresh)[: rpn.post_nms_top_n["test"]]
        return boxes[kept]

    def detect(self, features: dict[str, Tensor], proposals: Tensor, resized_hw: Tensor
               ) -> tuple[Tensor, Tensor, Tensor]:
        """proposals: (P, 4) -> boxes (N, 4) in resized pixels, scores (N,), labels (N,)."""
        heads = self.model.roi_heads
        rois = torch.cat([torch.zeros_like(proposals[:, :1]), proposals], dim=1)
        pooled = heads.box_roi_pool(features, rois, resized_hw[None])
        class_logits, deltas = heads.box_predictor(heads.box_head(pooled))
        return self.postprocess(self.detections, class_logits, deltas, proposals, resized_hw)

    def detections(self, class_logits: Tensor, deltas: Tensor, proposals: Tensor, resized_hw: Tensor
                   ) -> tuple[Tensor, Tensor, Tensor]:
        """The box predictor's outputs -> boxes (N, 4) in resized pixels, scores (N,), labels (N,)."""
        heads = self.model.roi_heads
        pred_boxes = clip_boxes(heads.box_coder.decode(deltas, proposals)[None], resized_hw[None])[0][:, 1:]
        scores = F.softmax(class_logits, dim=-1)[:, 1:]
        keep = (scores > heads.score_thresh) & is_large_enough(pred_boxes, MIN_DETECTION_SIZE)
        # class-major (C-1, P): one NMS per class, each capped at the detections kept per image
        boxes_by_class = pred_boxes.transpose(0, 1)
        scores_by_class = torch.where(keep, scores, torch.full_like(scores, -1.0)).transpose(0, 1)
        if heads.nms_agnostic:
            classes, index = agnostic_nms(boxes_by_class, scores_by_class, heads.nms_thresh, heads.score_thresh,
                                          heads.detections_per_img)
        else:
            selected = class_nms(boxes_by_class, scores_by_class, heads.nms_thresh, heads.score_thresh,
                                 heads.detections_per_img)
            classes, index = selected[:, 0], selected[:, 1]
        scores = scores_by_class[classes, index]
        scores, order = scores.topk(torch.clamp(torch._shape_as_tensor(scores)[0], max=heads.detections_per_img))
        return boxes_by_class[classes[order], index[order]], scores, classes[order] + 1


def class_nms(boxes: Tensor, scores: Tensor, iou_threshold: float, score_threshold: float,
              max_per_class: int) -> Tensor:
    """NMS inside each class: boxes (C, P, 4), scores (C, P) -> (K, 2) int64 (class, box index) of the
    boxes scoring above ``score_threshold`` that survive, at most ``max_per_class`` per class.

    The same detections as one class-aware NMS over everything followed by the top
    ``max_per_class``: a class's first n survivors do not depend on its later boxes. In ONNX it is
    one NonMaxSuppression with the classes as its batch; the class-offset trick that
    ``torchvision.ops.batched_nms`` traces to is one NMS over all P x C boxes, quadratic, and with
    ``box_score_thresh=0`` (90,000 boxes for COCO) it took 4x the time of the whole eager model.
    """
    if torch.onnx.is_in_onnx_export():
        return _ClassNMS.apply(boxes, scores, iou_threshold, score_threshold, max_per_class)
    return _class_nms(boxes, scores, iou_threshold, score_threshold, max_per_class)


def agnostic_nms(boxes: Tensor, scores: Tensor, iou_threshold: float, score_threshold: float,
                 max_detections: int) -> tuple[Tensor, Tensor]:
    """One NMS over every class's boxes together (``model.box_nms_agnostic``): boxes (C, P, 4), scores (C, P)
    -> (class (K,), box index (K,)), as the eager model's NMS with one group per image. ``class_nms`` with
    the C x P boxes as one class, so that ONNX gets the same single NonMaxSuppression."""
    per_class = torch._shape_as_tensor(scores)[1]
    selected = class_nms(boxes.reshape(1, -1, 4), scores.reshape(1, -1), iou_threshold, score_threshold,
                         max_detections)[:, 1]
    return torch.div(selected, per_class, rounding_mode="floor"), torch.remainder(selected, per_class)


def _class_nms(boxes: Tensor, scores: Tensor, iou_threshold: float, score_threshold: float,
               max_per_class: int) -> Tensor:
    selected = []
    for c in range(boxes.shape[0]):
        candidates = torch.where(scores[c] > score_threshold)[0]
        kept = candidates[nms(boxes[c, candidates], scores[c, candidates], iou_threshold)[:max_per_class]]
        selected.append(torch.stack([torch.full_like(kept, c), kept], dim=1))
    return torch.cat(selected)


class _ClassNMS(torch.autograd.Function):
    """``_class_nms`` as ONNX NonMaxSuppression (boxes (C, P, 4) as C batches, scores (C, 1, P));
    its ``score_threshold`` keeps scores strictly above it, as the eager model does."""

    @staticmethod
    def forward(ctx, boxes, scores, iou_threshold, score_threshold, max_per_class):
        return _class_nms(boxes, scores, iou_threshold, score_threshold, max_per_class)

    @staticmethod
    def symbolic(g, boxes, scores, iou_threshold, score_threshold, max_per_class):
        def const(values, dtype):
            return g.op("Constant", value_t=torch.tensor(values, dtype=dtype))

        selected = g.op("NonMaxSuppression", boxes, g.op("Unsqueeze", scores, const([1], torch.int64)),
                        const([max_per_class], torch.int64), const([iou_threshold], torch.float32),
                        const([score_threshold], torch.float32))
        return g.op("Gather", selected, const([0, 2], torch.int64), axis_i=1)   # (batch = class, box)
