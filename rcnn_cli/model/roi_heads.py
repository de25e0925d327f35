"""Second stage: pool each proposal, classify it and refine its box; losses and detections.

Shape shorthand:
    B: images in the batch
    P: proposals per image (padded, see Proposals)
    R: regions sampled for the loss over the batch (batch_size_per_image per image at most)
    C: classes including background (C - 1 object classes)
    K: detections kept per image (detections_per_img; padded, see Detections)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops.boxes import batched_nms, clip_boxes, is_large_enough, top_n_per_group
from .box_coder import BoxCoder
from .box_head import BoxPredictor
from .matcher import IGNORE, Matcher
from .roi_pool import MultiScaleRoIPool
from .sampler import BalancedSampler
from .structures import Detections, PaddedBoxes, Proposals

# Detections narrower or shorter than this (pixels) are dropped.
MIN_DETECTION_SIZE = 1e-2


class RoIHeads(nn.Module):
    """RoI pooling -> box head -> predictor, trained on sampled proposals.

    Args (defaults in conf/model/_faster_rcnn.yaml; the usual values in brackets):
        roi_pool: pooled features per region.
        box_head: per-region feature vector (two FC layers, or convs + FC).
        box_predictor: C + 1 class logits and 4(C + 1) deltas.
        fg_iou_thresh, bg_iou_thresh: proposal labelling (0.5 / 0.5).
        batch_size_per_image, positive_fraction: proposals sampled for the loss (512 at 0.25).
        bbox_reg_weights: delta weights (10, 10, 5, 5).
        score_thresh: minimum class score of a detection (strictly above).
        nms_thresh: NMS IoU (0.5), class-aware unless ``nms_agnostic``.
        nms_agnostic: one NMS over all classes, for classes that exclude each other on one object (False).
        detections_per_img: detections kept per image (100).
    """

    def __init__(self, roi_pool: MultiScaleRoIPool, box_head: nn.Module, box_predictor: BoxPredictor, *,
                 fg_iou_thresh: float, bg_iou_thresh: float, batch_size_per_image: int, positive_fraction: float,
                 bbox_reg_weights: tuple[float, float, float, float], score_thresh: float, nms_thresh: float,
                 detections_per_img: int, nms_agnostic: bool):
        super().__init__()
        self.box_roi_pool = roi_pool
        self.box_head = box_head
        self.box_predictor = box_predictor
        self.box_coder = BoxCoder(bbox_reg_weights)
        self.matcher = Matcher(fg_iou_thresh, bg_iou_thresh, allow_low_quality_matches=False)
        self.sampler = BalancedSampler(batch_size_per_image, positive_fraction)
        self.score_thresh = score_thresh
        self.nms_thresh = nms_thresh
        self.detections_per_img = detections_per_img
        self.nms_agnostic = nms_agnostic

    def forward(self, features: dict[str, Tensor], proposals: Proposals, image_sizes: Tensor,
                targets: PaddedBoxes | None = None, detect: bool = True
                ) -> tuple[Detections | None, dict[str, Tensor]]:
        """features: name -> (B, C, H, W); image_sizes: (B, 2) resized (height, width).

        Returns detections (network-input pixels) when ``detect``, and losses when ``targets``.
        """
        losses = self.losses(features, proposals, image_sizes, targets) if targets is not None else {}
        detections = self.detect(features, proposals, image_sizes) if detect else None
        return detections, losses

    def _predict(self, features: dict[str, Tensor], image: Tensor, boxes: Tensor,
                 image_sizes: Tensor) -> tuple[Tensor, Tensor]:
        """image: (R,) batch index; boxes: (R, 4) -> logits (R, C + 1), deltas (R, 4(C + 1))."""
        rois = torch.cat([image[:, None].to(boxes.dtype), boxes], dim=1)
        pooled = self.box_roi_pool(features, rois, image_sizes)
        return self.box_predictor(self.box_head(pooled))

    def losses(self, features: dict[str, Tensor], proposals: Proposals, image_sizes: Tensor,
               targets: PaddedBoxes) -> dict[str, Tensor]:
        """Ground-truth boxes join the proposals (so every object has a positive), then
        cross-entropy over the sampled proposals and smooth-L1 (beta 1/9) on the positives'
        deltas for their true class, divided by the number sampled."""
        boxes = torch.cat([proposals.boxes, targets.boxes.to(proposals.boxes.dtype)], dim=1)
        valid = torch.cat([proposals.valid, targets.valid], dim=1)
        matches = self.matcher.match(targets.boxes, targets.valid, boxes)
        gt_index = matches.clamp(min=0)
        labels = torch.where(matches >= 0, targets.labels.gather(1, gt_index), 0)
        sample_labels = torch.where((matches == IGNORE) | ~valid, -1, (matches >= 0).long())
        positive, negative = self.sampler(sample_labels)

        image, column = (positive | negative).nonzero(as_tuple=True)
        sampled_boxes = boxes[image, column]
        class_logits, deltas = self._predict(features, image, sampled_boxes, image_sizes)
        sampled_labels = labels[image, column]
        classifier_loss = F.cross_entropy(class_logits, sampled_labels)

        pos = torch.where(sampled_labels > 0)[0]
        matched_gt = targets.boxes[image[pos], gt_index[image[pos], column[pos]]]
        regression_targets = self.box_coder.encode(matched_gt, sampled_boxes[pos])
        pos_deltas = deltas.reshape(deltas.shape[0], -1, 4)[pos, sampled_labels[pos]]
        box_loss = F.smooth_l1_loss(pos_deltas, regression_targets, beta=1 / 9,
                                    reduction="sum") / max(sampled_labels.numel(), 1)
        return {"loss_classifier": classifier_loss, "loss_box_reg": box_loss}

    def detect(self, features: dict[str, Tensor], proposals: Proposals, image_sizes: Tensor) -> Detections:
        """Class-specific boxes for every proposal, score threshold, NMS per image (class-aware, or over all
        classes with ``nms_agnostic``; one call for the whole batch), best ``detections_per_img`` per image."""
        image, column = proposals.valid.nonzero(as_tuple=True)
        boxes = proposals.boxes[image, column]
        class_logits, deltas = self._predict(features, image, boxes, image_sizes)
        num_classes = class_logits.shape[-1]
        pred_boxes = clip_boxes(self.box_coder.decode(deltas, boxes), image_sizes[image])[:, 1:]
        scores = F.softmax(class_logits.float(), dim=-1)[:, 1:]   # fp32 scores under autocast too
        keep = (scores > self.score_thresh) & is_large_enough(pred_boxes, MIN_DETECTION_SIZE)
        roi, cls = keep.nonzero(as_tuple=True)
        flat_boxes, flat_scores, labels, flat_image = pred_boxes[roi, cls], scores[roi, cls], cls + 1, image[roi]
        groups = flat_image if self.nms_agnostic else flat_image * num_classes + labels
        kept = batched_nms(flat_boxes, flat_scores, groups, self.nms_thresh)
        kept = top_n_per_group(kept, flat_image, len(image_sizes), self.detections_per_img)
        return Detections(flat_boxes[kept], flat_scores[kept], labels[kept], flat_image[kept])
