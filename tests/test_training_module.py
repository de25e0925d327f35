"""Pieces of training that need no full run: the learning-rate schedule and scaling, weight decay
groups, the non-finite loss guard, and the DDP-style gathering of validation results."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rcnn_cli.model.factory import LoadedDetector
from rcnn_cli.settings.resolve import load_config
from rcnn_cli.training.module import DetectorModule, NonFiniteLossError, gather_from_all_ranks
from rcnn_cli.training.optim import lr_factor, parameter_groups, scaled_lr


def test_learning_rate_scales_with_the_global_batch_unless_set():
    sgd = load_config(["optim=sgd"]).optim
    assert scaled_lr(sgd, 16) == pytest.approx(0.02) and scaled_lr(sgd, 4) == pytest.approx(0.005)
    assert scaled_lr(load_config(["optim=sgd", "optim.lr=0.1"]).optim, 4) == 0.1


def test_warmup_then_steps_or_cosine():
    sgd = dict(load_config(["optim=sgd", "optim.warmup_steps=10"]).optim)
    assert lr_factor(0, 1000, sgd) == pytest.approx(0.001)
    assert lr_factor(10, 1000, sgd) == 1.0
    assert lr_factor(669, 1000, sgd) == 1.0 and lr_factor(670, 1000, sgd) == pytest.approx(0.1)
    assert lr_factor(890, 1000, sgd) == pytest.approx(0.01)
    cosine = {**sgd, "schedule": "cosine"}
    assert lr_factor(505, 1000, cosine) == pytest.approx(0.5, abs=1e-3) and lr_factor(1000, 1000, cosine) < 1e-6
    assert lr_factor(3, 20, sgd) < 1 and lr_factor(4, 20, sgd) == 1.0   # warmup capped at a fifth of the run


def test_no_weight_decay_on_norms_and_biases():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 2))
    decay, no_decay = parameter_groups(model, 1e-4)
    assert [p.shape for p in decay["params"]] == [torch.Size([4, 3, 3, 3]), torch.Size([2, 4])]
    assert len(no_decay["params"]) == 4 and no_decay["weight_decay"] == 0


class ExplodingModel(nn.Module):
    def forward(self, images, targets):
        return {"loss_classifier": torch.tensor(0.3), "loss_box_reg": torch.tensor(float("nan"))}


def test_a_non_finite_loss_names_the_term_and_the_images():
    detector = LoadedDetector(ExplodingModel(), ["a"], {})
    module = DetectorModule(detector, load_config([]).optim, {}, image_paths={"train": ["x.jpg", "y.jpg"]})
    batch = ([torch.zeros(3, 8, 8)], [{"index": 1}])
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss_box_reg .* on images y.jpg"):
        module.training_step(batch, 0)


def test_gathering_keeps_each_image_once_in_order():
    items = [(3, {"p": 3}, {}), (1, {"p": 1}, {}), (3, {"p": 3}, {})]
    assert [i for i, _, _ in gather_from_all_ranks(items)] == [1, 3]
