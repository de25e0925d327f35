"""An image's detections do not depend on the other images of its batch: the same boxes from
``rcnn predict`` at any --batch-size, ``rcnn eval``, validation in training and the Python API.

Padding a batch to its largest picture changed the feature maps near the right and bottom borders
of the smaller ones and the anchors the RPN put over the padding (on the face-mask set 603 boxes on
20 pictures at batch 1, 636 at batch 4), so the model batches only images of one input size."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch

from rcnn_cli.model import create_detector
from rcnn_cli.model.transform import ImageTransform
from rcnn_cli.settings.resolve import model_config

# (height, width): resized to a short side of 128 (long side at most 192), then padded to a multiple of 32:
# three input sizes, 128x192 (the first two resize alike, the fourth to 115x192), 192x128 (three resized
# sizes) and 128x128 alone.
SHAPES = [(100, 130), (96, 125), (128, 96), (90, 150), (64, 64), (140, 100), (141, 100)]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    # an untrained narrow model: every image keeps its 100 best boxes (score floor 0), so that any change
    # in the features shows in the boxes
    cfg = model_config("resnet18_fpn", min_size=128, max_size=192, fpn_channels=64, representation_size=128,
                       rpn_post_nms_top_n_test=100, box_score_thresh=0.0)
    return create_detector(cfg, ["a", "b", "c"]).model.eval()


@pytest.fixture(scope="module")
def images() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return [torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=generator) for h, w in SHAPES]


@contextmanager
def batch_independent_convolutions():
    """PyTorch's own convolutions instead of oneDNN's, whose kernels change with the batch size."""
    enabled = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = enabled


def detect_in_batches(model, images: list[torch.Tensor], batch_size: int) -> list[dict[str, torch.Tensor]]:
    with torch.inference_mode():
        return [found for start in range(0, len(images), batch_size)
                for found in model(images[start:start + batch_size])]


def compared(got: list[dict], expected: list[dict]) -> list[tuple[int, dict, dict]]:
    assert len(got) == len(expected)
    for index, detection in enumerate(expected):
        assert len(detection["boxes"]) > 0, f"image {index}: nothing detected, the comparison would compare nothing"
    return list(zip(range(len(got)), got, expected))


@pytest.mark.parametrize("batch_size", [2, 4, len(SHAPES)])
def test_detections_at_any_batch_size_equal_batch_1_bit_for_bit(model, images, batch_size):
    """With convolutions whose result does not depend on the batch size (PyTorch's own, oneDNN off) an
    image's detections are bit for bit those it gets alone: padding is the only batch effect the model has."""
    with batch_independent_convolutions():
        alone = detect_in_batches(model, images, 1)
        got = detect_in_batches(model, images, batch_size)
    for index, a, b in compared(got, alone):
        for key in ("boxes", "scores", "labels"):
            assert torch.equal(a[key], b[key]), f"image {index} {SHAPES[index]}: {key} differ from batch 1"


def test_with_onednn_the_detections_differ_from_batch_1_by_float_rounding_only(model, images):
    """oneDNN (the CPU default) picks its convolution kernels by batch size, so images that share an input
    size and run together differ from batch 1 in the last float bits (seen: 3e-5 px, 2e-7 in scores), never
    in what is detected."""
    alone = detect_in_batches(model, images, 1)
    got = detect_in_batches(model, images, len(images))
    for index, a, b in compared(got, alone):
        assert torch.equal(a["labels"], b["labels"]), f"image {index} {SHAPES[index]}"
        torch.testing.assert_close(a["boxes"], b["boxes"], rtol=0, atol=1e-3, msg=f"image {index} boxes")
        torch.testing.assert_close(a["scores"], b["scores"], rtol=0, atol=1e-5, msg=f"image {index} scores")


@pytest.mark.parametrize("min_size", [128, [96, 128]])     # multi-scale training evaluates at the last
def test_input_size_is_the_size_an_image_runs_at(min_size):
    transform = ImageTransform(min_size, 192, [0.5] * 3, [0.25] * 3).eval()
    # (49, 97) resizes to 96.99 x 192 and (43, 54) to 128 x 160.7: sizes that truncate onto a multiple of 32
    for shape in SHAPES + [(33, 47), (301, 77), (128, 128), (97, 200), (3, 500), (49, 97), (43, 54)]:
        ran = transform([torch.zeros((3, *shape), dtype=torch.uint8)]).tensor.shape[-2:]
        assert transform.input_size(shape) == tuple(ran), shape


def test_validation_detections_equal_batch_1(model, images):
    """What ``rcnn eval`` and validation in training score (forward_with_losses on a batch)."""
    targets = [{"boxes": torch.tensor([[5.0, 5.0, 40.0, 50.0]]), "labels": torch.tensor([1])} for _ in images]
    with batch_independent_convolutions(), torch.inference_mode():
        alone = detect_in_batches(model, images, 1)
        losses, got = model.forward_with_losses(images, targets)
    for index, a, b in compared(got, alone):
        for key in ("boxes", "scores", "labels"):
            assert torch.equal(a[key], b[key]), f"image {index} {SHAPES[index]}: {key} differ from batch 1"
    assert set(losses) == {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"}
    assert all(torch.isfinite(value) for value in losses.values())


def test_validation_loss_weighs_each_image_as_one_batch_would(model, images):
    """The groups' losses average by their numbers of images: the three input sizes (in order of first
    appearance: images 0, 1, 3; 2, 5, 6; 4) run one by one give the batch's val/loss."""
    targets = [{"boxes": torch.tensor([[5.0, 5.0, 40.0, 50.0]]), "labels": torch.tensor([1])} for _ in images]
    groups = [[0, 1, 3], [2, 5, 6], [4]]
    with torch.inference_mode():
        torch.manual_seed(2)        # the samplers draw at random: the same draws in both runs
        losses = model.forward_with_losses(images, targets)[0]
        torch.manual_seed(2)
        parts = [model.forward_with_losses([images[i] for i in g], [targets[i] for i in g])[0] for g in groups]
    for name, value in losses.items():
        expected = sum(part[name] * len(g) for part, g in zip(parts, groups)) / len(images)
        torch.testing.assert_close(value, expected, msg=name)


def test_images_of_one_input_size_still_run_together(model, images):
    """Batching stays worth it where sizes match (a folder of camera frames): one backbone pass per size."""
    passes = []
    hook = model.backbone.register_forward_hook(lambda module, args, out: passes.append(args[0].shape[0]))
    try:
        with torch.inference_mode():
            model(images)
    finally:
        hook.remove()
    assert sorted(passes) == [1, 3, 3]
