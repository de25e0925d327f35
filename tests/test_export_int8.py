"""`rcnn export --int8`: the verified ONNX graph quantized by onnxruntime (QDQ, per-channel), calibrated on
the training images, kept only when its detections agree with fp32 torch's at mAP50 >= 0.98.

The tiny test model (one epoch, every score under 0.3) is the rule's hard case: int8 rounding moves
its near-threshold detections, agreement ~0.9, and the file is refused. The keep path is run with the
threshold lowered, on the same graph, so that predict runs a real int8 file."""

from __future__ import annotations

import json

import onnx
import pytest
from helpers import export_int8, export_report, reported, run_rcnn

from rcnn_cli.commands import export as command
from rcnn_cli.export import pipeline
from rcnn_cli.export.int8 import MIN_INT8_AGREEMENT_MAP50


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    return export_int8(tiny_run, "onnx", tmp_path_factory.mktemp("int8"))


def _agreement(exported) -> float:
    return reported(export_report(exported[1]), "int8")["verification"]["agreement_map50"]


def test_int8_below_the_agreement_rule_is_not_written(exported):
    _, out, result = exported
    assert result.returncode == 1, result.stderr[-3000:]
    assert "calibrated on 16 train images" in result.stderr, result.stderr
    agreement = _agreement(exported)
    print(f"tiny model int8 agreement mAP50 {agreement}")
    assert 0.5 < agreement < MIN_INT8_AGREEMENT_MAP50     # measured 0.90 here: refused, but a real int8 graph
    assert "tiny.int8.onnx disagreed with the torch model and were not written" in result.stderr
    assert sorted(p.name for p in out.parent.iterdir()) == ["tiny.onnx"]     # fp32 kept, no int8 or temp file


def test_int8_that_passes_is_kept_and_predict_runs_it(exported, tiny_run, monkeypatch, tmp_path):
    from helpers import tiny_images

    from rcnn_cli.export.verify import check_images
    from rcnn_cli.inference.predictor import load_predictor
    from rcnn_cli.settings.resolve import resolve

    weights, out, _ = exported
    agreement = _agreement(exported)
    monkeypatch.setattr(pipeline, "MIN_INT8_AGREEMENT_MAP50", agreement - 0.05)
    settings = resolve("export", [], weights=weights)
    detector = load_predictor(settings.cfg, settings.checkpoint, prepare=False)
    checked = check_images(None, detector.dataset)
    assert pipeline.write_int8(detector, out, checked, None)
    path = out.with_name("tiny.int8.onnx")
    graph = onnx.load(str(path)).graph
    ops = [node.op_type for node in graph.node]
    quantized = {node.input[0] for node in graph.node if node.op_type == "DequantizeLinear"}
    assert ops.count("QuantizeLinear") > 20 and len(quantized) > 20
    assert path.stat().st_size < out.stat().st_size
    assert json.loads({p.key: p.value for p in onnx.load(str(path)).metadata_props}["class_names"]) == [
        "circle", "square", "triangle"]
    images = tiny_images(3)
    run = run_rcnn("predict", *map(str, images), "--weights", str(path), "--out", str(tmp_path / "p"), "--conf",
                   "0.05", "--no-draw", "--batch-size", "1", cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    written = json.loads((tmp_path / "p" / "predictions.json").read_text())
    assert len(written) == 3 and sum(len(r["detections"]) for r in written) > 0


def test_int8_needs_the_onnx_format():
    from rcnn_cli.errors import UsageError

    with pytest.raises(UsageError, match="--int8 quantizes the ONNX or OpenVINO file"):
        command.run(command.ExportOptions(suffixes=[".torchscript"], int8=True))
