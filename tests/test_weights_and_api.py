"""Loading weights users bring, refusing what is unsafe or wrong, and the Python API."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torchvision
from helpers import bccd_images
from PIL import Image

from rcnn_cli import Detector
from rcnn_cli.model import WeightsError
from rcnn_cli.model.weights import guess_model_name, read_weights_file

SMALL = {"min_size": 128, "max_size": 160, "precision": "fp32"}   # fp32: the exact eager model


@pytest.fixture(scope="module")
def tv_mobilenet_file(tmp_path_factory):
    torch.manual_seed(0)
    model = torchvision.models.detection.fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None)
    path = tmp_path_factory.mktemp("w") / "mobilenet.pth"
    torch.save(model.state_dict(), path)
    return path


class Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/rcnn_pwned",))


def test_pickle_that_runs_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "x": Exploit()}, path)
    with pytest.raises(WeightsError, match="could run code"):
        read_weights_file(path)
    assert not os.path.exists("/tmp/rcnn_pwned")


@pytest.mark.parametrize("content,match", [
    (b"", "not a readable PyTorch checkpoint"),
    (b"hello, not a checkpoint", "not a"),
    (b"\x08\x07\x12\x07pytorch", "ONNX model"),
])
def test_bad_files_get_one_line(tmp_path, content, match):
    path = tmp_path / "bad.pth"
    path.write_bytes(content)
    with pytest.raises(WeightsError, match=match) as err:
        read_weights_file(path)
    assert "\n" not in str(err.value)


def test_truncated_checkpoint(tmp_path, tv_mobilenet_file):
    path = tmp_path / "cut.pth"
    path.write_bytes(tv_mobilenet_file.read_bytes()[:100_000])
    with pytest.raises(WeightsError, match="truncated"):
        read_weights_file(path)


def test_missing_file():
    with pytest.raises(WeightsError, match="not found"):
        Detector.load("/nonexistent/w.pth")


def test_wrong_backbone_names_the_keys_and_the_fitting_model(tv_mobilenet_file):
    with pytest.raises(WeightsError) as err:
        Detector.load(tv_mobilenet_file, model="resnet18_fpn")
    message = str(err.value)
    assert "do not fit model resnet18_fpn" in message and "model=mobilenet_v3_large_fpn" in message
    assert "backbone.body." in message and "\n" not in message


def test_wrong_class_count_explains(tv_mobilenet_file):
    with pytest.raises(WeightsError, match="91 classes"):
        Detector.load(tv_mobilenet_file, model="mobilenet_v3_large_320_fpn", num_classes=4)


def test_torchvision_file_gets_coco_names_and_architecture_from_keys(tv_mobilenet_file):
    state = torch.load(tv_mobilenet_file, weights_only=True)
    assert guess_model_name(state) == "mobilenet_v3_large_fpn"
    det = Detector.load(tv_mobilenet_file, **SMALL)
    assert det.class_names[0] == "person" and len(det.class_names) == 90
    assert det.config["norm"] == "bn"  # saved from a trainable-BN model: same module type here


def test_predict_accepts_every_image_kind():
    det = Detector("resnet18_fpn", class_names=["a", "b"], box_score_thresh=0.0, **SMALL)
    path = bccd_images(1)[0]
    pil = Image.open(path)
    array = np.asarray(pil.convert("RGB"))
    chw_uint8 = torch.from_numpy(array.copy()).permute(2, 0, 1)
    results = det.predict([str(path), path, pil, array, chw_uint8, chw_uint8.float() / 255])
    assert len(results) == 6
    for r in results[1:]:
        assert torch.allclose(r["boxes"], results[0]["boxes"], atol=1e-3)
    first = results[0]
    assert first["boxes"].shape[1] == 4 and len(first["names"]) == len(first["labels"]) > 0
    assert set(first["names"]) <= {"a", "b"}
    assert first["boxes"][:, 2].max() <= pil.width and first["boxes"][:, 3].max() <= pil.height
    single = det.predict(path)
    assert isinstance(single, dict) and torch.allclose(single["boxes"], first["boxes"], atol=1e-3)


def test_backbone_weights_load_from_an_imagenet_checkpoint(tmp_path):
    torch.manual_seed(0)
    classifier = torchvision.models.resnet18()
    path = tmp_path / "resnet18_imagenet.pth"
    torch.save(classifier.state_dict(), path)
    det = Detector("resnet18_fpn", num_classes=3, backbone_weights=str(path), **SMALL)
    body = det.model.backbone.body
    assert torch.equal(body.layer3[0].conv1.weight, classifier.layer3[0].conv1.weight)
    assert det.config["norm"] == "frozen_bn" and det.config["trainable_backbone_layers"] == 3
    assert not body.layer1[0].conv1.weight.requires_grad and body.layer4[0].conv1.weight.requires_grad
    wrong = tmp_path / "vgg.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, wrong)
    with pytest.raises(WeightsError, match="does not fit the resnet18_fpn backbone"):
        Detector("resnet18_fpn", num_classes=3, backbone_weights=str(wrong))


@pytest.mark.parametrize("preset", ["resnet50_fpn_v2", "mobilenet_v3_large_320_fpn", "vgg16"])
def test_every_preset_builds_trains_and_detects(preset):
    torch.manual_seed(0)
    det = Detector(preset, num_classes=3, **SMALL)
    image = torch.rand(3, 120, 150)
    target = {"boxes": torch.tensor([[10.0, 20.0, 60.0, 90.0]]), "labels": torch.tensor([2])}
    det.model.train()
    losses = det.model([image], [target])
    assert all(torch.isfinite(v) for v in losses.values())
    det.model.eval()
    assert det.predict(image)["boxes"].shape[1] == 4
