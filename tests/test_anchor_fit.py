"""Anchor fit (``rcnn data check``): the share of training boxes, after the model's resize, that no anchor
shape matches at IoU >= 0.5, and the anchor sizes or min_size that bring it under 5%."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import BCCD, require_shared

from rcnn_cli.data.inspection.anchor_fit import anchor_fit, anchor_shapes, best_iou, box_shapes
from rcnn_cli.data.readers.load import load_dataset
from rcnn_cli.data.records import ImageRecord
from rcnn_cli.settings.resolve import load_config

DEFAULT_ANCHORS = [[32], [64], [128], [256], [512]]


@pytest.fixture(scope="module")
def bccd_train():
    require_shared()
    loaded = load_dataset(load_config(["dataset=bccd", f"dataset.root={BCCD}"]).dataset, ("train",))
    return loaded.class_names, loaded.splits["train"]


def test_shares_by_hand_on_a_few_boxes():
    # 480x480 at min_size 240: everything halves. Anchors as the model rounds them: 32 at ratio 2
    # (h/w) is 22x46, at 0.5 46x22; 64 at ratio 2 is 46x90.
    sizes = [(64, 64, 1), (20, 200, 1), (40, 40, 2), (48, 48, 2), (100, 100, 2)]
    boxes = np.array([[10, 10, 10 + w, 10 + h] for w, h, _ in sizes], np.float32)
    record = ImageRecord(Path("x.png"), 480, 480, boxes, np.array([c for *_, c in sizes]), np.zeros(5, bool))
    anchors = anchor_shapes(DEFAULT_ANCHORS, [0.5, 1.0, 2.0])
    assert anchors[:3].tolist() == [[46, 22], [32, 32], [22, 46]] and anchors[5].tolist() == [46, 90]
    shapes, labels = box_shapes([record], 240, 1333)
    assert shapes.tolist() == [[32, 32], [10, 100], [20, 20], [24, 24], [50, 50]]
    # 32x32 on the 32 anchor; 10x100 best on 22x46: 10*46 / (1000 + 1012 - 460); 20x20 best on 46x22:
    # 400 / 1012; 24x24 on 32x32: 576 / 1024; 50x50 on 64x64: 2500 / 4096.
    assert best_iou(shapes, anchors).tolist() == pytest.approx([1.0, 460 / 1552, 400 / 1012, 576 / 1024, 2500 / 4096],
                                                               rel=1e-12)
    model = {"min_size": 240, "max_size": 1333, "anchor_sizes": DEFAULT_ANCHORS, "aspect_ratios": [0.5, 1.0, 2.0]}
    fit = anchor_fit([record], ["a", "b"], model)
    assert fit["classes"] == {"a": {"boxes": 2, "unmatched": 1, "share": 0.5},
                              "b": {"boxes": 3, "unmatched": 1, "share": 0.3333}}
    # A 1:10 box is at best IoU 20a / (1000 + 2a^2 - 20a) <= 0.29 with an a x 2a anchor of any size: no
    # scaling of anchors or images fixes class a, so nothing is suggested.
    assert fit["suggestions"] == []
    # With a 1:10 anchor too, class b's 20x20 (IoU 400/1012) is the miss: anchors x0.75 put a 24x24 on it
    # (400/576), or images x1.5 (min_size 360, to a multiple of 16: 352) make it 29x29 on the 32x32.
    fit = anchor_fit([record], ["a", "b"], {**model, "aspect_ratios": [0.5, 1.0, 2.0, 10.0]})
    assert fit["classes"]["a"]["share"] == 0.0 and fit["suggestions"] == [
        {"overrides": ["model.anchor_sizes=[[24],[48],[96],[192],[384]]"], "worst_share": 0.0},
        {"overrides": ["model.min_size=352"], "worst_share": 0.0}]


def test_bccd_default_anchors_fit_and_a_small_min_size_gets_a_fix_that_works(bccd_train):
    names, records = bccd_train
    model = load_config(["dataset=bccd"]).model                     # resnet18_fpn: 800 / 1333, 32..512
    fit = anchor_fit(records, names, model)
    assert fit["classes"] == {"Platelets": {"boxes": 209, "unmatched": 0, "share": 0.0},
                              "RBC": {"boxes": 2381, "unmatched": 0, "share": 0.0},
                              "WBC": {"boxes": 214, "unmatched": 0, "share": 0.0}}
    assert fit["suggestions"] == []
    # At min_size 128 (480 -> 128) a platelet of ~35 px becomes ~9 px, far below the 32 px anchor.
    small = anchor_fit(records, names, load_config(["dataset=bccd", "model.min_size=128"]).model)
    assert {k: c["unmatched"] for k, c in small["classes"].items()} == {"Platelets": 208, "RBC": 138, "WBC": 1}
    assert [s["overrides"] for s in small["suggestions"]] == [["model.anchor_sizes=[[12],[24],[48],[96],[192]]"],
                                                              ["model.min_size=384"]]
    for suggestion in small["suggestions"]:
        fixed = anchor_fit(records, names, load_config(["dataset=bccd", "model.min_size=128",
                                                         *suggestion["overrides"]]).model)
        worst = max(c["share"] for c in fixed["classes"].values())
        assert worst == suggestion["worst_share"] and worst <= 0.05 and fixed["suggestions"] == []
    assert [s["worst_share"] for s in small["suggestions"]] == [0.0478, 0.0144]
