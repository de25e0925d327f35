"""Weight-for-weight equivalence with torchvision's fasterrcnn_* models on real images."""

from __future__ import annotations

import pytest
import torch
import torchvision
from helpers import bccd_images, facemask_images
from torchvision.io import read_image
from torchvision.ops import FrozenBatchNorm2d

from rcnn_cli import Detector

BUILDERS = {
    "resnet50_fpn": torchvision.models.detection.fasterrcnn_resnet50_fpn,
    "resnet50_fpn_v2": torchvision.models.detection.fasterrcnn_resnet50_fpn_v2,
    "mobilenet_v3_large_fpn": torchvision.models.detection.fasterrcnn_mobilenet_v3_large_fpn,
}
# BCCD's native 640x480 (no upscaling) keeps the test fast; sizes still differ per image.
# Every detection is compared (no top-100 cut, where equal scores would make the choice arbitrary).
SIZE = {"min_size": 480, "max_size": 800, "box_detections_per_img": 100_000}


def seeded_torchvision_model(name: str, sample: torch.Tensor) -> torch.nn.Module:
    """torchvision's model with random weights from a fixed seed (no download).

    Untouched random init gives near-constant scores whose float ties make any top-k ambiguous,
    so normalisation statistics are randomised and the two classifiers scaled to unit spread.
    """
    torch.manual_seed(0)
    model = BUILDERS[name](weights=None, weights_backbone=None, num_classes=7, box_score_thresh=0.0, **SIZE)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        # Random box deltas throw most boxes far outside the image; clipped to slivers on the
        # border they pool identical features, and identical scores.
        model.rpn.head.bbox_pred.weight.mul_(0.1)
        model.roi_heads.box_predictor.bbox_pred.weight.mul_(0.1)
        for m in model.modules():
            if isinstance(m, (torch.nn.BatchNorm2d, FrozenBatchNorm2d)):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
        model.eval()
        images, _ = model.transform([sample])
        features = model.backbone(images.tensors)
        objectness, _ = model.rpn.head(list(features.values()))
        model.rpn.head.cls_logits.weight.div_(torch.cat([o.flatten() for o in objectness]).std() / 2)
        captured = {}
        hook = model.roi_heads.box_head.register_forward_hook(lambda m, i, o: captured.setdefault("x", o))
        model([sample])
        hook.remove()
        classifier = model.roi_heads.box_predictor.cls_score
        classifier.weight.normal_(0, 1.0, generator=g)
        classifier.weight.div_((captured["x"] @ classifier.weight.T).std() / 2)
    return model


def canonical(detections: dict) -> dict:
    """Sorted by score, then box, so that equal scores cannot reorder the comparison."""
    keys = torch.cat([-detections["scores"][:, None], detections["boxes"]], dim=1).tolist()
    order = sorted(range(len(keys)), key=keys.__getitem__)
    return {k: v[order] for k, v in detections.items()}


def assert_same_detections(theirs: dict, ours: dict) -> None:
    assert len(theirs["boxes"]) == len(ours["boxes"]) > 0
    theirs, ours = canonical(theirs), canonical(ours)
    assert torch.equal(theirs["labels"], ours["labels"])
    assert (theirs["boxes"] - ours["boxes"]).abs().max() <= 1e-3
    assert (theirs["scores"] - ours["scores"]).abs().max() <= 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("name", list(BUILDERS))
def test_same_detections_as_torchvision(name, tmp_path):
    paths = bccd_images(2) + facemask_images(2)
    images = [read_image(str(p)).float() / 255 for p in paths]
    reference = seeded_torchvision_model(name, images[0])
    weights = tmp_path / f"{name}.pth"
    torch.save(reference.state_dict(), weights)

    ours = Detector.load(weights, model=name, box_score_thresh=0.0, precision="fp32", **SIZE)
    assert ours.config["norm"] == ("bn" if name != "resnet50_fpn_v2" else "bn")
    with torch.inference_mode():
        expected = [reference([img])[0] for img in images]
        singles = [ours.model([img])[0] for img in images]
    for theirs, mine in zip(expected, singles):
        assert len(theirs["scores"]) > 100
        assert_same_detections(theirs, mine)
    if name == "resnet50_fpn":
        # one batched call over images of different input sizes: ours runs each size apart, so every image gets
        # exactly its single-image detections (torchvision pads the batch to its largest image, which changes
        # them). One image per size: two of one size share a batch, whose oneDNN kernels differ in the last bits.
        sizes = [ours.model.transform.input_size(tuple(img.shape[-2:])) for img in images]
        apart = [i for i, size in enumerate(sizes) if sizes.index(size) == i]
        assert len(apart) == 3
        with torch.inference_mode():
            batched = ours.model([images[i] for i in apart])
        for i, mine in zip(apart, batched):
            for key in ("boxes", "scores", "labels"):
                assert torch.equal(mine[key], singles[i][key]), (paths[i].name, key)
