"""The whole detector: transform -> backbone -> RPN -> RoI heads, and its builder."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from .anchors import AnchorGenerator
from .backbones import build_backbone
from .box_head import BoxPredictor, ConvFCHead, TwoMLPHead
from .roi_heads import RoIHeads
from .roi_pool import MultiScaleRoIPool
from .rpn import RegionProposalNetwork
from .rpn_head import RPNHead
from .structures import PaddedBoxes
from .transform import ImageTransform

Detection = dict[str, Tensor]


class FasterRCNN(nn.Module):
    """Faster R-CNN. Module names match torchvision's ``FasterRCNN`` (``backbone``, ``rpn``,
    ``roi_heads``), so a torchvision state_dict loads into it.

    ``model(images)`` in eval mode returns per image ``{"boxes": (N, 4) xyxy, "scores": (N,),
    "labels": (N,)}`` in original pixels; in train mode ``model(images, targets)`` returns the
    named losses. ``forward_with_losses`` returns both (validation loss in eval mode).
    """

    def __init__(self, transform: ImageTransform, backbone: nn.Module, rpn: RegionProposalNetwork,
                 roi_heads: RoIHeads):
        super().__init__()
        self.transform = transform
        self.backbone = backbone
        self.rpn = rpn
        self.roi_heads = roi_heads
        self.channels_last = False     # set by fast.optimize_for_inference
        self.precision = "fp32"        # what fast.prepare_for_inference chose

    def forward(self, images: list[Tensor], targets: list[Detection] | None = None):
        """images: per image (3, H, W) uint8 or float in [0, 1]; targets: per image ``boxes``
        (N, 4) xyxy original pixels and ``labels`` (N,) in 1..C (needed in train mode)."""
        if self.training:
            if targets is None:
                raise ValueError("targets are required in training mode")
            return self._run(images, targets, detect=False)[0]
        return self._run(images, None, detect=True)[1]

    def forward_with_losses(self, images: list[Tensor], targets: list[Detection]
                            ) -> tuple[dict[str, Tensor], list[Detection]]:
        return self._run(images, targets, detect=True)

    def _run(self, images: list[Tensor], targets: list[Detection] | None, detect: bool
             ) -> tuple[dict[str, Tensor], list[Detection]]:
        """In eval mode, images of different input sizes run apart (``same_input_size``): a batch padded to
        its largest picture would change the others' detections (features near the padded borders, anchors
        over the padding), so an image gets the same boxes at any batch size, in predict, eval and training's
        validation. Training keeps one padded batch, as torchvision trains."""
        groups = [list(range(len(images)))] if self.training else self.same_input_size(images)
        if len(groups) == 1:
            return self._run_batch(images, targets, detect)
        losses: dict[str, Tensor] = {}
        detections: list[Detection] = [{} for _ in images]
        for group in groups:
            part_losses, found = self._run_batch([images[i] for i in group],
                                                 None if targets is None else [targets[i] for i in group], detect)
            for i, detection in zip(group, found):
                detections[i] = detection
            for name, value in part_losses.items():      # each image's losses weigh as in one batch
                losses[name] = losses.get(name, 0) + value * (len(group) / len(images))
        return losses, detections if detect else []

    def same_input_size(self, images: list[Tensor]) -> list[list[int]]:
        """Indices of ``images`` grouped by the padded size each enters the network at, in order of first
        appearance (the callers put the detections back in input order)."""
        groups: dict[tuple[int, int], list[int]] = {}
        for i, image in enumerate(images):
            groups.setdefault(self.transform.input_size(tuple(image.shape[-2:])), []).append(i)
        return list(groups.values())

    def _run_batch(self, images: list[Tensor], targets: list[Detection] | None, detect: bool
                   ) -> tuple[dict[str, Tensor], list[Detection]]:
        padded = None
        if targets is not None:
            device = images[0].device
            padded = PaddedBoxes.from_list([t["boxes"].to(device) for t in targets],
                                           [t["labels"].to(device) for t in targets])
        batch = self.transform(images, padded)
        tensor = batch.tensor.contiguous(memory_format=torch.channels_last) if self.channels_last else batch.tensor
        features = self.backbone(tensor)
        if isinstance(features, Tensor):
            features = OrderedDict([("0", features)])
        proposals, losses = self.rpn(list(features.values()), tuple(batch.tensor.shape[-2:]),
                                     batch.image_sizes, batch.targets)
        detections, head_losses = self.roi_heads(features, proposals, batch.image_sizes, batch.targets, detect)
        losses.update(head_losses)
        if detections is None:
            return losses, []
        return losses, self.transform.to_original(detections, batch).split(len(images))


def build_model(cfg: Mapping[str, Any], num_classes: int) -> FasterRCNN:
    """Builds the detector a complete ``model`` config describes (keys are torchvision's argument
    names; every default is in conf/model/_faster_rcnn.yaml). ``norm`` and
    ``trainable_backbone_layers`` must be decided already (``factory.create_detector`` applies the
    pretrained rule).

    num_classes counts the background, as in torchvision (91 for COCO).
    """
    backbone = build_backbone(cfg["backbone"], cfg["norm"], cfg["trainable_backbone_layers"], cfg["fpn_channels"])

    anchor_generator = AnchorGenerator(
        tuple(tuple(level) for level in cfg["anchor_sizes"]),
        tuple(tuple(cfg["aspect_ratios"]) for _ in cfg["anchor_sizes"]),
    )
    rpn_head = RPNHead(backbone.out_channels, anchor_generator.num_anchors_per_location()[0],
                       conv_depth=cfg["rpn_conv_depth"], objectness=cfg["rpn_objectness"])
    rpn = RegionProposalNetwork(
        anchor_generator, rpn_head,
        fg_iou_thresh=cfg["rpn_fg_iou_thresh"], bg_iou_thresh=cfg["rpn_bg_iou_thresh"],
        batch_size_per_image=cfg["rpn_batch_size_per_image"], positive_fraction=cfg["rpn_positive_fraction"],
        pre_nms_top_n={"train": cfg["rpn_pre_nms_top_n_train"], "test": cfg["rpn_pre_nms_top_n_test"]},
        post_nms_top_n={"train": cfg["rpn_post_nms_top_n_train"], "test": cfg["rpn_post_nms_top_n_test"]},
        nms_thresh=cfg["rpn_nms_thresh"], score_thresh=cfg["rpn_score_thresh"],
    )

    output_size = cfg["roi_output_size"]
    roi_pool = MultiScaleRoIPool(list(cfg["roi_featmap_names"]), output_size, cfg["roi_sampling_ratio"],
                                 pool_type=cfg["roi_pool"])
    pooled_shape = (backbone.out_channels, output_size, output_size)
    if cfg["box_head"] == "conv_fc":
        box_head: nn.Module = ConvFCHead(pooled_shape, [256] * 4, [cfg["representation_size"]])
    else:
        box_head = TwoMLPHead(pooled_shape[0] * output_size * output_size, cfg["representation_size"])
    roi_heads = RoIHeads(
        roi_pool, box_head, BoxPredictor(box_head.out_features, num_classes),
        fg_iou_thresh=cfg["box_fg_iou_thresh"], bg_iou_thresh=cfg["box_bg_iou_thresh"],
        batch_size_per_image=cfg["box_batch_size_per_image"], positive_fraction=cfg["box_positive_fraction"],
        bbox_reg_weights=tuple(cfg["bbox_reg_weights"]),
        score_thresh=cfg["box_score_thresh"], nms_thresh=cfg["box_nms_thresh"],
        detections_per_img=cfg["box_detections_per_img"], nms_agnostic=bool(cfg["box_nms_agnostic"]),
    )
    transform = ImageTransform(cfg["min_size"], cfg["max_size"], list(cfg["image_mean"]), list(cfg["image_std"]),
                               cfg["size_divisible"])
    return FasterRCNN(transform, backbone, rpn, roi_heads)
