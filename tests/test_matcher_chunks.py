"""Matching a slice of the ground truth at a time (bounded memory on crowded images) gives exactly the
matches of the one-shot (B, G, N) IoU, and torchvision's per-image matcher's."""

from __future__ import annotations

import pytest
import torch
from torchvision.models.detection._utils import Matcher as TorchvisionMatcher

from rcnn_cli.model.anchors import AnchorGenerator
from rcnn_cli.model.matcher import Matcher
from rcnn_cli.model.structures import PaddedBoxes
from rcnn_cli.ops.boxes import pairwise_iou


def crowded_batch() -> tuple[PaddedBoxes, torch.Tensor]:
    """3 images (40, 7 and 0 boxes) with duplicate boxes, so that equal IoUs fall in different
    slices, and boxes equal to anchors; anchors of a 128 px image on two levels."""
    g = torch.Generator().manual_seed(0)
    anchors = AnchorGenerator(((16,), (32,)), ((0.5, 1.0, 2.0),) * 2)([(32, 32), (16, 16)], (128, 128),
                                                                       torch.device("cpu"), torch.float32)
    xy = torch.rand(40, 2, generator=g) * 100
    crowded = torch.cat([xy, xy + 4 + torch.rand(40, 2, generator=g) * 40], 1)
    crowded[7], crowded[31] = crowded[2], anchors[1000]        # a tie across slices; an exact anchor
    crowded[39] = crowded[2]
    few = crowded[10:17] + 3
    labels = [torch.ones(len(b), dtype=torch.int64) for b in (crowded, few, crowded[:0])]
    return PaddedBoxes.from_list([crowded, few, crowded[:0]], labels), anchors


@pytest.mark.parametrize("low_quality", [True, False])
@pytest.mark.parametrize("max_pairs", [1, 3 * 5 * 3840, 10**9])   # 1 gt per slice, 5 per slice, all at once
def test_sliced_matching_equals_one_shot(low_quality, max_pairs):
    targets, anchors = crowded_batch()
    matcher = Matcher(0.7, 0.3, allow_low_quality_matches=low_quality)
    one_shot = matcher(pairwise_iou(targets.boxes, anchors), targets.valid)
    sliced = matcher.match(targets.boxes, targets.valid, anchors, max_pairs=max_pairs)
    assert torch.equal(sliced, one_shot)
    assert (one_shot[0] == 31).any() and (one_shot[2] == -1).all()      # the exact anchor; the empty image
    if low_quality:   # every box claims its best anchors; the duplicates of box 2 lose its ties to it
        assert (one_shot[0] == 2).any() and not ((one_shot[0] == 7) | (one_shot[0] == 39)).any()
    # torchvision's matcher, image by image on the real boxes, agrees (its -1/-2 are ours).
    for image in range(2):
        boxes = targets.boxes[image][targets.valid[image]]
        theirs = TorchvisionMatcher(0.7, 0.3, allow_low_quality_matches=low_quality)(pairwise_iou(boxes, anchors))
        assert torch.equal(sliced[image], theirs)


def test_sliced_matching_with_per_image_candidates():
    # The box head matches each image's own proposals (B, N, 4).
    targets, anchors = crowded_batch()
    proposals = torch.stack([anchors[::7][:500], anchors[3::7][:500], anchors[5::7][:500]])
    matcher = Matcher(0.5, 0.5)
    one_shot = matcher(pairwise_iou(targets.boxes, proposals), targets.valid)
    assert torch.equal(matcher.match(targets.boxes, targets.valid, proposals, max_pairs=1000), one_shot)
    assert (one_shot[0] >= 0).any() and (one_shot[2] == -1).all()
