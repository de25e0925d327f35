"""model.precision=int8: the quantized backbone detects what fp32 detects on real pictures, and
predict/benchmark expose it with one-line errors for what cannot work."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import bccd_images, run_rcnn, tiny_images

from rcnn_cli import Detector
from rcnn_cli.eval.agreement import agreement_map50
from rcnn_cli.inference.quantize import QuantizationError, quantize_int8

pytestmark = pytest.mark.skipif("x86" not in torch.backends.quantized.supported_engines,
                                reason="this torch build has no x86 quantized engine")


def shapes_images(tiny_run, start, count):
    return tiny_images(count, start)


def test_int8_quantizes_the_backbone_and_rpn_conv_and_still_detects(tiny_run):
    """On trained weights int8 must find every labelled cell with fp32's AP50 (test_training_signal.py::
    test_overfits_one_bccd_image); agreement with fp32 on the trained BCCD model is 0.990 (docs/speed.md),
    a model the suite cannot train in its time. This tiny model is weak."""
    detector = Detector.load(tiny_run / "checkpoints" / "best.ckpt", box_score_thresh=0.05)
    images = shapes_images(tiny_run, 0, 4)
    exact = detector.predict(images)
    calibration = [_chw(path) for path in shapes_images(tiny_run, 24, 16)]   # not the scored images
    quantize_int8(detector.model, calibration)
    quantized = [m for m in detector.model.modules() if "quantized" in type(m).__module__]
    assert len(quantized) >= 20 and detector.model.precision == "int8"
    assert any("quantized" in type(m).__module__ for m in detector.model.rpn.head.conv.modules())
    int8 = detector.predict(images)
    assert sum(len(e["boxes"]) for e in int8) > 0
    assert agreement_map50(exact, int8, 3) > 0.5


def _chw(path):
    from rcnn_cli.data.images import read_rgb

    return torch.from_numpy(read_rgb(path)).permute(2, 0, 1)


def test_int8_needs_calibration_images():
    detector = Detector(model="resnet18_fpn", num_classes=3, min_size=96, max_size=96, fpn_channels=64)
    with pytest.raises(QuantizationError, match="calibration images"):
        quantize_int8(detector.model, [])


def test_predict_int8_runs_and_bad_precision_is_one_line(tiny_run, tmp_path):
    weights = str(tiny_run / "checkpoints" / "best.ckpt")
    images = [str(p) for p in shapes_images(tiny_run, 0, 3)] + [str(p) for p in bccd_images(1)]
    run = run_rcnn("predict", *images, "--weights", weights, "--precision", "int8", "--no-draw",
                   "--out", str(tmp_path / "p"), cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert len(json.loads((tmp_path / "p" / "predictions.json").read_text())) == 4
    assert "images/s (int8 on cpu)" in run.stdout + run.stderr      # the summary says what ran
    bad = run_rcnn("predict", *images, "--weights", weights, "--precision", "int4", cwd=tmp_path)
    assert bad.returncode == 2 and "must be one of auto, fp32, bf16, int8" in bad.stderr
    assert "Traceback" not in bad.stderr
