"""A torchvision file is run as the preset it is (issue 15 item 12), and predict's DataLoader works
where workers are spawned (item 10)."""

from __future__ import annotations

import pickle

import pytest
import torch
import torchvision
from helpers import bccd_images, compose, run_rcnn
from torch.utils.data import DataLoader

from rcnn_cli.predict.runner import _ImageFiles, as_list
from rcnn_cli.settings.resolve import resolve


@pytest.fixture(scope="module")
def mobilenet_320_file(tmp_path_factory):
    """torchvision's fasterrcnn_mobilenet_v3_large_320_fpn with seeded random weights (no download)."""
    torch.manual_seed(0)
    model = torchvision.models.detection.fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None,
                                                                              num_classes=91)
    path = tmp_path_factory.mktemp("tv") / "fasterrcnn_mobilenet_v3_large_320_fpn.pth"
    torch.save(model.state_dict(), path)
    return path, model


def test_the_guess_is_said_with_how_to_choose_the_320_model(mobilenet_320_file):
    path, _ = mobilenet_320_file
    guessed = resolve("predict", weights=path)
    assert guessed.cfg.model.name == "mobilenet_v3_large_fpn"
    assert "model=mobilenet_v3_large_320_fpn" in guessed.notes[0]
    named = compose("model=mobilenet_v3_large_320_fpn", weights=path, command="predict").model
    assert (named.min_size, named.max_size, named.rpn_pre_nms_top_n_test, named.rpn_post_nms_top_n_test) == \
        (320, 640, 150, 150)


def test_the_320_file_runs_end_to_end_as_torchvision_does(mobilenet_320_file, tmp_path):
    path, theirs = mobilenet_320_file
    images = bccd_images(2)
    out = run_rcnn("predict", *map(str, images), "--weights", str(path), "model=mobilenet_v3_large_320_fpn",
                   "model.precision=fp32", "--conf", "0.05", "--out", str(tmp_path / "p"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    import json

    from rcnn_cli.data.images import read_chw

    ours = json.loads((tmp_path / "p" / "predictions.json").read_text())
    theirs.eval()
    with torch.no_grad():
        reference = theirs([read_chw(p).float() / 255 for p in images])
    for result, expected in zip(ours, reference):
        kept = expected["scores"] >= 0.05
        assert len(result["detections"]) == int(kept.sum())


def test_predict_inputs_load_in_spawned_workers(tmp_path):
    """The collate function and the dataset must pickle: spawn is the default on macOS and Windows."""
    images = bccd_images(3)
    pickle.dumps(as_list)
    loader = DataLoader(_ImageFiles(images), batch_size=2, num_workers=1, collate_fn=as_list,
                        multiprocessing_context="spawn")
    batches = list(loader)
    assert [len(b) for b in batches] == [2, 1] and all(error is None for batch in batches for _, _, error in batch)
