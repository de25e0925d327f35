"""model.precision=bf16 and auto's choice: the heavy layers run in bf16, everything that places
boxes stays fp32; what auto takes is the one rule's (test_precision.py). On trained weights,
bf16's AP50 must stay within 0.5 points of fp32's (test_training_signal.py::
test_overfits_one_bccd_image); its agreement with fp32 on the trained BCCD model (0.997) is a
benchmark figure (docs/speed.md)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from helpers import TINY_TRAIN, run_rcnn, tiny_images

from rcnn_cli import Detector, hardware
from rcnn_cli.errors import UsageError
from rcnn_cli.eval.agreement import agreement_map50
from rcnn_cli.inference.fast import Bfloat16, Float32, prepare_for_inference


def shapes_images(tiny_run, count):
    return tiny_images(count)


def test_bf16_runs_backbone_rpn_and_box_head_in_bf16_and_returns_fp32_boxes(tiny_run):
    detector = Detector.load(tiny_run / "checkpoints" / "best.ckpt", box_score_thresh=0.05, precision="fp32")
    images = shapes_images(tiny_run, 4)
    exact = detector.predict(images)
    prepare_for_inference(detector.model, "bf16")
    model = detector.model
    assert model.precision == "bf16" and model.channels_last
    for part in (model.backbone, model.rpn.head.conv, model.rpn.head.cls_logits, model.roi_heads.box_head):
        assert isinstance(part, Bfloat16)
        assert {p.dtype for p in part.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in model.roi_heads.box_predictor.parameters()} == {torch.float32}
    # the RPN's box deltas stay fp32: their bf16 rounding broke agreement on weakly trained models (issue 28 item 4)
    deltas = model.rpn.head.bbox_pred
    assert isinstance(deltas, Float32) and {p.dtype for p in deltas.parameters()} == {torch.float32}
    features = torch.rand(1, deltas.module.in_channels, 5, 6).bfloat16()
    assert torch.equal(deltas(features), deltas.module(features.float()))
    found = detector.predict(images)
    assert all(d["boxes"].dtype == torch.float32 and d["scores"].dtype == torch.float32 for d in found)
    assert sum(len(d["boxes"]) for d in found) > 0
    # one epoch on shapes is weak (many detections near the threshold), so only a loose floor here
    assert agreement_map50(exact, found, 3) > 0.5


def test_auto_builds_bf16_or_folded_as_the_rule_decides(monkeypatch):
    """prepare_model applies what inference/precision.py decided (the rule itself: test_precision.py)."""
    from rcnn_cli.inference import predictor
    from rcnn_cli.inference.precision import Decision

    model = Detector(model="resnet18_fpn", num_classes=3, min_size=96, max_size=96, fpn_channels=64,
                     precision="fp32").model
    for runs in ("folded", "bf16"):
        monkeypatch.setattr(predictor, "decide", lambda *a, runs=runs, **k: Decision("auto", runs, "test"))
        prepare_model = predictor.prepare_model
        prepare_model(model, "auto", torch.device("cpu"))
        assert model.precision == runs and isinstance(model.backbone, Bfloat16) == (runs == "bf16")
        with torch.inference_mode():
            assert model([torch.rand(3, 90, 120)])[0]["boxes"].dtype == torch.float32


def test_the_probe_never_times_bf16_where_it_is_not_native():
    with hardware.override("avx2"):
        assert hardware.bf16_speedup("cpu") == 0.0     # not timed at all: emulated bf16 is slow
    native = hardware.Hardware("test", "a CPU with native bf16", frozenset({"avx2", "avx512_bf16"}), False, False)
    with hardware.override(native):
        assert hardware.bf16_speedup("cpu") > 0.0       # timed: a positive ratio, whatever it is


def test_eval_scores_the_precision_asked_for_and_refuses_an_unknown_one(tiny_run, tmp_path):
    weights = str(tiny_run / "checkpoints" / "best.ckpt")
    scores = {}
    for precision in ("fp32", "bf16"):
        out = run_rcnn("eval", "--weights", weights, "--json", str(tmp_path / f"{precision}.json"),
                       "--out", str(tmp_path / precision), f"model.precision={precision}", "trainer.accelerator=cpu",
                       cwd=tiny_run.parent.parent)
        assert out.returncode == 0, out.stderr[-2000:]
        scores[precision] = json.loads((tmp_path / f"{precision}.json").read_text())["map_50"]
    assert scores["fp32"] > 0 and abs(scores["bf16"] - scores["fp32"]) < 0.1
    bad = run_rcnn("eval", "--weights", weights, "model.precision=fp8", "trainer.accelerator=cpu",
                   cwd=tiny_run.parent.parent)
    assert bad.returncode == 2 and "must be one of auto, fp32, bf16, int8" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_python_api_set_precision_reports_what_it_chose(tiny_run):
    with hardware.override("avx2"):
        detector = Detector.load(tiny_run / "checkpoints" / "best.ckpt", precision="fp32")
        assert detector.model.precision == "fp32"
        assert detector.set_precision("auto") == "folded"
        assert "no native bf16" in detector.precision_decision.line()
    assert len(detector.predict(shapes_images(tiny_run, 1))) == 1
    with pytest.raises(UsageError, match="model.precision=fp8"):
        Detector.load(tiny_run / "checkpoints" / "best.ckpt", precision="fp32").set_precision("fp8")


@pytest.mark.parametrize("pays_off, expected", [(True, "bf16-mixed"), (False, "32-true")])
def test_trainer_precision_auto_trains_in_bf16_only_where_it_pays(monkeypatch, pays_off, expected):
    from rcnn_cli.training import trainer as run

    monkeypatch.setattr(hardware, "bf16_pays_off", lambda device_type: pays_off)
    assert run.training_precision("auto", "cpu") == expected
    assert run.training_precision("16-mixed", "cpu") == "16-mixed"     # an explicit choice is kept


def test_boxes_are_decoded_in_fp32_from_bf16_deltas():
    """Under bf16 autocast the heads give bf16 deltas; decoding them against bf16 references
    would put an 800 px box edge on a 4 px grid."""
    from rcnn_cli.model.box_coder import BoxCoder

    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    references = torch.tensor([[701.3, 402.7, 799.1, 517.9]])
    exact = coder.decode(torch.zeros(1, 4), references)
    from_bf16 = coder.decode(torch.zeros(1, 4, dtype=torch.bfloat16), references)
    assert from_bf16.dtype == torch.float32
    assert torch.allclose(from_bf16, exact, atol=1e-3)


def test_bf16_mixed_training_validates_and_saves_fp32_detections(tmp_path):
    """Validation under bf16 autocast once handed bf16 scores to the metric (a crash after the
    first epoch); detections must come out fp32 whatever the autocast."""
    out = run_rcnn("train", *TINY_TRAIN, "trainer.precision=bf16-mixed", "trainer.max_epochs=1",
                   "trainer.limit_train_batches=3", "trainer.limit_val_batches=2", "run_dir=runs/bf16", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "precision: bf16-mixed" in out.stdout + out.stderr
    detector = Detector.load(tmp_path / "runs" / "bf16" / "checkpoints" / "last.ckpt")
    found = detector.predict(torch.randint(0, 255, (3, 128, 128), dtype=torch.uint8))
    assert found["scores"].dtype == torch.float32


@pytest.mark.parametrize("supported, expected", [(True, torch.bfloat16), (False, torch.float16)])
def test_a_gpu_takes_bf16_from_its_support_not_from_a_timing(monkeypatch, supported, expected):
    """On an H200 four concurrent runs timed the probe conv (launch-bound there) and three of them
    chose 16-mixed, one bf16-mixed: on a GPU the choice must not depend on a timing."""
    def no_probe(*args, **kwargs):
        raise AssertionError("a GPU was timed")

    monkeypatch.setattr(hardware, "timed", no_probe)
    gpu = dataclasses.replace(hardware.detected(), profile="gpu", cuda=True, cuda_bf16=supported)
    with hardware.override(gpu):
        assert hardware.training_autocast_dtype("cuda") == expected
        assert hardware.bf16_pays_off("cuda") == supported
