"""The losses train the model: finite, reach every parameter, and overfit one real image."""

from __future__ import annotations

import copy
import xml.etree.ElementTree as ET

import pytest
import torch
from helpers import BCCD, require_shared
from torchvision.io import read_image
from torchvision.ops import box_iou

from rcnn_cli.eval.coco import coco_metrics
from rcnn_cli.inference.fast import prepare_for_inference
from rcnn_cli.model import create_detector
from rcnn_cli.settings.resolve import model_config

CLASSES = ["Platelets", "RBC", "WBC"]
LOSS_NAMES = {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"}


def bccd_sample(stem: str) -> tuple[torch.Tensor, dict]:
    """A BCCD image and its (valid) boxes, parsed directly from the VOC XML."""
    require_shared()
    boxes, labels = [], []
    for obj in ET.parse(BCCD / "Annotations" / f"{stem}.xml").findall("object"):
        box = [float(obj.find("bndbox").find(k).text) for k in ("xmin", "ymin", "xmax", "ymax")]
        if box[2] > box[0] and box[3] > box[1]:
            boxes.append(box)
            labels.append(CLASSES.index(obj.find("name").text) + 1)
    image = read_image(str(BCCD / "JPEGImages" / f"{stem}.jpg"))
    return image, {"boxes": torch.tensor(boxes), "labels": torch.tensor(labels)}


def small_detector(**overrides):
    cfg = model_config("resnet18_fpn", min_size=224, max_size=300, **overrides)
    return create_detector(cfg, CLASSES).model


@pytest.mark.parametrize("objectness", ["sigmoid", "softmax"])
def test_every_trainable_parameter_gets_a_finite_gradient(objectness):
    torch.manual_seed(0)
    model = small_detector(rpn_objectness=objectness).train()
    samples = [bccd_sample("BloodImage_00000"), bccd_sample("BloodImage_00001")]
    losses = model([s[0] for s in samples], [s[1] for s in samples])
    assert set(losses) == LOSS_NAMES
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert len(trainable) > 50
    no_grad = [n for n, p in trainable if p.grad is None or not torch.isfinite(p.grad).all()]
    assert no_grad == []
    assert sum(float(p.grad.abs().sum()) for _, p in trainable) > 0


def test_images_without_boxes_train_as_pure_background():
    torch.manual_seed(0)
    model = small_detector().train()
    image, _ = bccd_sample("BloodImage_00000")
    empty = {"boxes": torch.zeros((0, 4)), "labels": torch.zeros((0,), dtype=torch.long)}
    losses = model([image], [empty])
    assert losses["loss_rpn_box_reg"] == 0 and losses["loss_box_reg"] == 0
    assert torch.isfinite(losses["loss_objectness"]) and losses["loss_classifier"] > 0


def finds_every_object(found: dict, target: dict) -> bool:
    """Every labelled box has a detection of its class scoring >= 0.5 at IoU >= 0.5."""
    confident = found["scores"] >= 0.5
    iou = box_iou(target["boxes"], found["boxes"][confident])
    same_label = target["labels"][:, None] == found["labels"][confident][None, :]
    return bool(((iou >= 0.5) & same_label).any(dim=1).all())


@pytest.mark.slow
def test_overfits_one_bccd_image():
    """resnet18_fpn from scratch on one image (5 RBC + 1 WBC) for 90 steps, ~100 s on one core."""
    torch.manual_seed(0)
    image, target = bccd_sample("BloodImage_00137")
    # Fewer sampled RoIs, a narrow box head and a frozen stem keep each step near one second.
    model = small_detector(box_batch_size_per_image=128, rpn_batch_size_per_image=128,
                           rpn_post_nms_top_n_train=300, trainable_backbone_layers=3,
                           representation_size=256).train()
    steps = 90
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3)
    # Decaying to zero makes the last weights a settled minimum rather than one noisy step of a
    # constant-rate walk, which is what kept the single WBC from showing up on some CPUs.
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=2e-3, total_steps=steps, pct_start=0.15)
    for _ in range(steps):
        loss = sum(model([image], [target]).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    model.eval()
    with torch.inference_mode():
        found = model([image])[0]
    assert finds_every_object(found, target), "fp32 misses a labelled cell"

    # Accuracy must not move with precision: on these trained weights bf16 and int8 find every
    # labelled cell, and their AP50 against the labels is within 0.5 points of fp32's. (Output-vs-
    # output agreement is not asserted here: this one-image model's overlapping duplicates make it
    # depend on the thread count, 0.96 to 1.0; on the trained BCCD model it is 0.997 for bf16 and
    # 0.990 for int8, docs/speed.md.)
    fp32_ap50 = coco_metrics([found], [target], len(CLASSES))["map_50"]
    calibration = [image] + [bccd_sample(stem)[0] for stem in ("BloodImage_00001", "BloodImage_00010")]
    paths = ["bf16"] + (["int8"] if "x86" in torch.backends.quantized.supported_engines else [])
    for precision in paths:
        reduced = prepare_for_inference(copy.deepcopy(model), precision, calibration)
        with torch.inference_mode():
            detections = reduced([image])
        assert finds_every_object(detections[0], target), precision
        ap50 = coco_metrics(detections, [target], len(CLASSES))["map_50"]
        assert ap50 >= fp32_ap50 - 0.005, f"{precision}: AP50 {ap50:.3f} against fp32's {fp32_ap50:.3f}"
