"""Region Proposal Network: scores anchors, turns the best into proposals, and trains itself.

Shape shorthand:
    B: images in the batch
    A: anchors of one image over all levels (sum over levels of H_l * W_l * k)
    k: anchors per location (sizes x aspect ratios of one level)
    G: ground-truth boxes of the image with the most (others padded, see PaddedBoxes)
    P: proposals kept per image (post_nms_top_n; padded, see Proposals)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops.boxes import batched_nms, clip_boxes, is_large_enough, top_n_per_group
from .anchors import AnchorGenerator
from .box_coder import BoxCoder
from .matcher import BACKGROUND, Matcher
from .rpn_head import RPNHead
from .sampler import BalancedSampler
from .structures import PaddedBoxes, Proposals, scatter_to_padded

# Proposals narrower or shorter than this (pixels) are dropped before NMS.
MIN_PROPOSAL_SIZE = 1e-3


class RegionProposalNetwork(nn.Module):
    """Anchors + RPN head + proposal selection + the two RPN losses.

    Args (defaults in conf/model/_faster_rcnn.yaml; the usual values in brackets):
        anchor_generator: the k anchors per location.
        head: objectness and deltas per anchor.
        fg_iou_thresh, bg_iou_thresh: anchor labelling (0.7 / 0.3, low-quality matches allowed).
        batch_size_per_image, positive_fraction: anchors sampled for the loss (256 at 0.5).
        pre_nms_top_n: per mode (``train``/``test``), best anchors kept per level before NMS.
        post_nms_top_n: per mode, proposals kept per image after NMS.
        nms_thresh: IoU of the proposal NMS (0.7).
        score_thresh: minimum objectness probability of a proposal (0 keeps all).
    """

    def __init__(self, anchor_generator: AnchorGenerator, head: RPNHead, *,
                 fg_iou_thresh: float, bg_iou_thresh: float, batch_size_per_image: int, positive_fraction: float,
                 pre_nms_top_n: dict[str, int], post_nms_top_n: dict[str, int], nms_thresh: float,
                 score_thresh: float):
        super().__init__()
        self.anchor_generator = anchor_generator
        self.head = head
        self.box_coder = BoxCoder((1.0, 1.0, 1.0, 1.0))
        self.matcher = Matcher(fg_iou_thresh, bg_iou_thresh, allow_low_quality_matches=True)
        self.sampler = BalancedSampler(batch_size_per_image, positive_fraction)
        self.pre_nms_top_n = pre_nms_top_n
        self.post_nms_top_n = post_nms_top_n
        self.nms_thresh = nms_thresh
        self.score_thresh = score_thresh

    def forward(self, features: list[Tensor], padded_shape: tuple[int, int], image_sizes: Tensor,
                targets: PaddedBoxes | None = None) -> tuple[Proposals, dict[str, Tensor]]:
        """features: per level (B, C, H, W); padded_shape: batch tensor (H, W); image_sizes: (B, 2)
        resized (height, width); targets: ground truth in network-input pixels (losses if given).
        """
        objectness_logits, deltas = self.head(features)           # (B, A, 1 or 2), (B, A, 4)
        anchors = self.anchor_generator([tuple(f.shape[-2:]) for f in features], padded_shape,
                                        device=deltas.device, dtype=torch.promote_types(deltas.dtype, torch.float32))
        level_sizes = [f.shape[-2] * f.shape[-1] * k
                       for f, k in zip(features, self.anchor_generator.num_anchors_per_location())]
        boxes = self.box_coder.decode(deltas.detach(), anchors)[..., 0, :]          # (B, A, 4)
        # (B, A) logits of P(object); fp32 because bf16 logits would tie in top-k.
        object_logits = self.head.objectness_score(objectness_logits.detach().float())
        proposals = self.select_proposals(boxes, object_logits, level_sizes, image_sizes)
        losses = self.losses(objectness_logits, deltas, anchors, targets) if targets is not None else {}
        return proposals, losses

    def select_proposals(self, boxes: Tensor, logits: Tensor, level_sizes: list[int],
                         image_sizes: Tensor) -> Proposals:
        """boxes: (B, A, 4) decoded anchors; logits: (B, A) logits of P(object) -> (B, P) proposals.

        Per level the best ``pre_nms_top_n`` anchors, clipped, tiny ones dropped, NMS per image
        and level in one call, then the best ``post_nms_top_n`` per image.
        """
        mode = "train" if self.training else "test"
        batch = boxes.shape[0]
        top_idx, levels, start = [], [], 0
        for level, size in enumerate(level_sizes):
            k = min(self.pre_nms_top_n[mode], size)
            top_idx.append(logits[:, start:start + size].topk(k, dim=1).indices + start)
            levels.append(torch.full((k,), level, dtype=torch.int64, device=boxes.device))
            start += size
        top_idx = torch.cat(top_idx, dim=1)
        level_of = torch.cat(levels)
        rows = torch.arange(batch, device=boxes.device)[:, None]
        scores = torch.sigmoid(logits[rows, top_idx])
        candidates = clip_boxes(boxes[rows, top_idx], image_sizes)
        keep = is_large_enough(candidates, MIN_PROPOSAL_SIZE) & (scores >= self.score_thresh)
        image, column = keep.nonzero(as_tuple=True)
        flat_boxes, flat_scores = candidates[image, column], scores[image, column]
        groups = image * len(level_sizes) + level_of[column]
        kept = batched_nms(flat_boxes, flat_scores, groups, self.nms_thresh)
        kept = top_n_per_group(kept, image, batch, self.post_nms_top_n[mode])
        padded_boxes, valid = scatter_to_padded(flat_boxes[kept], image[kept], batch)
        padded_scores, _ = scatter_to_padded(flat_scores[kept], image[kept], batch)
        return Proposals(padded_boxes, padded_scores, valid)

    def losses(self, logits: Tensor, deltas: Tensor, anchors: Tensor,
               targets: PaddedBoxes) -> dict[str, Tensor]:
        """logits: (B, A, 1 or 2); deltas: (B, A, 4); anchors: (A, 4).

        Objectness: BCE (sigmoid) or CE (softmax) over the sampled anchors. Boxes: smooth-L1
        (beta 1/9) on the positives, divided by the number sampled, as in torchvision.
        """
        matches = self.matcher.match(targets.boxes, targets.valid, anchors)
        labels = torch.where(matches >= 0, 1, torch.where(matches == BACKGROUND, 0, -1))
        positive, negative = self.sampler(labels)
        sampled = positive | negative
        num_sampled = sampled.sum().clamp(min=1)

        gt_index = matches.clamp(min=0)
        image, anchor = positive.nonzero(as_tuple=True)
        regression_targets = self.box_coder.encode(targets.boxes[image, gt_index[image, anchor]], anchors[anchor])
        box_loss = F.smooth_l1_loss(deltas[image, anchor], regression_targets, beta=1 / 9,
                                    reduction="sum") / num_sampled

        sampled_logits = logits[sampled]
        sampled_positive = positive[sampled]
        if self.head.objectness == "sigmoid":
            objectness_loss = F.binary_cross_entropy_with_logits(sampled_logits[:, 0], sampled_positive.float())
        else:
            objectness_loss = F.cross_entropy(sampled_logits, sampled_positive.long())
        return {"loss_objectness": objectness_loss, "loss_rpn_box_reg": box_loss}
