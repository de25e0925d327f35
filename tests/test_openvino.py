"""`rcnn export --format openvino`: an OpenVINO IR of the whole detector, verified like the ONNX file
(it is converted from it), that `rcnn predict` and `Detector.load` run with the checkpoint's detections."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from helpers import bccd_images, facemask_images, image_folder, run_rcnn

from rcnn_cli.api import Detector


@pytest.fixture(scope="module")
def real_images(tmp_path_factory):
    return image_folder(tmp_path_factory.mktemp("openvino-images"), bccd_images(2) + facemask_images(1))


@pytest.fixture(scope="module")
def exported(tiny_run, real_images):
    weights = tiny_run / "checkpoints" / "best.ckpt"
    out = tiny_run / "openvino" / "tiny.xml"
    result = run_rcnn("export", "--weights", str(weights), "--format", "openvino", "--out", str(out),
                      "--images", str(real_images), cwd=tiny_run.parent.parent)
    return weights, out, result


def test_the_ir_is_written_after_its_parity_check(exported):
    _, out, result = exported
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stderr.count("parity ok") == 1 and "openvino" in result.stderr, result.stderr
    assert out.is_file() and out.with_suffix(".bin").is_file()
    assert sorted(p.name for p in out.parent.iterdir()) == ["tiny.bin", "tiny.xml"]   # no temp files left
    matched = int(result.stderr.split(" detections matched")[0].split()[-1].split("/")[0])
    assert matched > 0


def test_predict_and_the_api_give_the_checkpoints_detections(exported, real_images, tmp_path):
    weights, out, _ = exported
    images = sorted(str(p) for p in real_images.iterdir())
    # one image per call (a batch pads images to the largest), at the threshold it was exported at
    checkpoint = Detector.load(weights, precision="fp32")
    reference = [checkpoint.predict([image])[0] for image in images]
    assert sum(len(r["boxes"]) for r in reference) > 0
    # the exact graph gives the checkpoint's detections; what auto runs is inference/precision.py's (test_precision.py)
    run = run_rcnn("predict", str(real_images), "--weights", str(out), "--out", str(tmp_path / "ov"), "--conf", "0",
                   "--no-draw", "--batch-size", "1", "--precision", "fp32", cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "(openvino f32 on cpu)" in run.stderr, run.stderr
    written = json.loads((tmp_path / "ov" / "predictions.json").read_text())
    detector = Detector.load(out, precision="fp32")
    assert detector.runs_as == "openvino f32" and detector.class_names == ["circle", "square", "triangle"]
    for ours, image, file, api in zip(reference, images, written, detector.predict(images)):
        assert file["image"].endswith(image.rsplit("/", 1)[-1])
        assert [d["label"] for d in file["detections"]] == [checkpoint.class_names[i - 1] for i in ours["labels"]]
        assert np.allclose([d["box"] for d in file["detections"]], np.asarray(ours["boxes"]).reshape(-1, 4), atol=0.02)
        assert np.array_equal(np.asarray(ours["labels"]), np.asarray(api["labels"]))
        assert np.allclose(np.asarray(ours["boxes"]), np.asarray(api["boxes"]), atol=0.02)
        assert np.allclose(np.asarray(ours["scores"]), np.asarray(api["scores"]), atol=1e-3)


def test_an_unknown_format_is_one_line_exit_2():
    from rcnn_cli.commands.export import suffixes_for
    from rcnn_cli.errors import UsageError

    assert suffixes_for(["onnx,openvino", "torchscript"]) == [".onnx", ".xml", ".torchscript"]
    with pytest.raises(UsageError, match="--format tensorrt: use one of onnx, torchscript, openvino"):
        suffixes_for(["onnx,tensorrt"])


def test_a_missing_bin_file_is_one_line(exported, tmp_path):
    from rcnn_cli.inference.exported import ExportError

    _, out, _ = exported
    shutil.copy(out, tmp_path / "alone.xml")
    with pytest.raises(ExportError, match="not a readable OpenVINO model .* needs alone.bin beside it"):
        Detector.load(tmp_path / "alone.xml")


@pytest.mark.parametrize("profile", ["amx", "avx2"])
def test_auto_picks_the_ir_precision_by_the_one_rule_on_either_cpu_kind(exported, real_images, tmp_path, monkeypatch,
                                                                         profile):
    """Both branches on whichever CPU runs the suite (RCNN_HARDWARE): on a bf16-native CPU auto measures bf16
    against f32 on real images (here the inputs) before taking it; on an AVX2-only one it never tries."""
    from rcnn_cli import hardware
    from rcnn_cli.inference import precision

    monkeypatch.setenv(hardware.ENV, profile)
    monkeypatch.setenv(precision.CACHE_ENV, str(tmp_path / "cache"))
    _, out, _ = exported
    run = run_rcnn("predict", str(real_images), "--weights", str(out), "--out", str(tmp_path / "p"), "--no-draw",
                   cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    line = next(line for line in run.stderr.splitlines() if line.startswith("precision auto:"))
    if profile == "avx2":
        assert line.startswith("precision auto: runs fp32;") and "no native bf16" in line
        assert "(openvino auto: f32 on cpu)" in run.stderr
    else:
        assert "measured:" in line and "detections in 3 " in line, line
        assert f"(openvino auto: {'bf16' if 'runs bf16' in line else 'f32'} on cpu)" in run.stderr
