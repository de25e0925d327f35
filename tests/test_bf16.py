"""model.precision=bf16 and auto's choice: the heavy layers run in bf16, everything that places
boxes stays fp32, and auto takes bf16 only where the probe measures it faster. Agreement with fp32
on trained weights (>= 0.98 mAP50) is asserted in test_training_signal.py::test_overfits_one_bccd_image."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import run_rcnn

from rcnn_cli import Detector
from rcnn_cli.eval.agreement import agreement_map50
from rcnn_cli.model import fast, hardware
from rcnn_cli.model.fast import Bfloat16, prepare_for_inference


def shapes_images(tiny_run, count):
    return sorted((tiny_run.parent.parent / "data" / "shapes" / "images").glob("*.jpg"))[:count]


def test_bf16_runs_backbone_rpn_and_box_head_in_bf16_and_returns_fp32_boxes(tiny_run):
    detector = Detector.load(tiny_run / "checkpoints" / "best.ckpt", box_score_thresh=0.05)
    images = shapes_images(tiny_run, 4)
    exact = detector.predict(images)
    prepare_for_inference(detector.model, "bf16")
    model = detector.model
    assert model.precision == "bf16" and model.channels_last
    for part in (model.backbone, model.rpn.head.conv, model.rpn.head.cls_logits, model.roi_heads.box_head):
        assert isinstance(part, Bfloat16)
        assert {p.dtype for p in part.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in model.roi_heads.box_predictor.parameters()} == {torch.float32}
    found = detector.predict(images)
    assert all(d["boxes"].dtype == torch.float32 and d["scores"].dtype == torch.float32 for d in found)
    assert sum(len(d["boxes"]) for d in found) > 0
    # one epoch on shapes is weak (many detections near the threshold), so only a loose floor here
    assert agreement_map50(exact, found, 3) > 0.5


@pytest.mark.parametrize("pays_off, expected", [(True, "bf16"), (False, "folded")])
def test_auto_takes_bf16_only_where_the_probe_measures_it_faster(monkeypatch, pays_off, expected):
    monkeypatch.setattr(fast, "bf16_pays_off", lambda device_type: pays_off)
    model = Detector(model="resnet18_fpn", num_classes=3, min_size=96, max_size=96, fpn_channels=64).model
    prepare_for_inference(model, "auto")
    assert model.precision == expected and isinstance(model.backbone, Bfloat16) == pays_off
    with torch.inference_mode():
        assert model([torch.rand(3, 90, 120)])[0]["boxes"].dtype == torch.float32


def test_probe_never_picks_bf16_on_a_cpu_without_native_bf16(monkeypatch):
    monkeypatch.setattr(hardware, "cpu_flags", lambda: {"avx2", "fma", "avx512f", "avx512_vnni"})
    assert hardware.bf16_speedup.__wrapped__("cpu") == 0.0     # not timed at all: emulated bf16 is slow
    monkeypatch.setattr(hardware, "cpu_flags", lambda: {"avx2", "avx512_bf16", "amx_bf16"})
    assert hardware.bf16_speedup.__wrapped__("cpu") > 0.0       # timed: a positive ratio, whatever it is


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
    assert bad.returncode == 2 and "use one of auto, fp32, bf16, int8" in bad.stderr
    assert "Traceback" not in bad.stderr
