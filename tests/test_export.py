"""`rcnn export`: ONNX and TorchScript files of the whole detector that detect what eager torch
detects on real images of several sizes, that `rcnn predict` runs, and that refuse to be written
when they disagree."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torchvision
from helpers import bccd_images, facemask_images, image_folder, run_rcnn

from rcnn_cli.api import Detector, to_chw_tensor
from rcnn_cli.eval.agreement import compare_detections
from rcnn_cli.export.exporters import write_onnx
from rcnn_cli.export.verify import check_images, verify_export
from rcnn_cli.inference.exported import OnnxDetector


@pytest.fixture(scope="module")
def real_images(tmp_path_factory):
    """Two BCCD (640x480) and two facemask pictures (other sizes), in one folder."""
    return image_folder(tmp_path_factory.mktemp("export-images"), bccd_images(2) + facemask_images(2))


@pytest.fixture(scope="module")
def exported(tiny_run, real_images, tmp_path_factory):
    """Both formats of the tiny run's checkpoint, in a folder of their own (never the shared run's), and
    the --json report beside that folder."""
    weights = tiny_run / "checkpoints" / "best.ckpt"
    work = tmp_path_factory.mktemp("exported")
    out = work / "files" / "tiny.onnx"
    result = run_rcnn("export", "--weights", str(weights), "--onnx", "--torchscript", "--out", str(out),
                      "--images", str(real_images), "--json", str(work / "report.json"), cwd=work)
    return weights, out, result


def report_of(exported) -> dict:
    _, out, result = exported
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((out.parent.parent / "report.json").read_text())


def test_both_formats_are_written_after_passing_their_parity_check(exported):
    _, out, _ = exported
    report = report_of(exported)
    assert [(f["path"], f["kind"], f["kept"]) for f in report["files"]] == [
        (str(out), "fp32", True), (str(out.with_suffix(".torchscript")), "fp32", True)]
    # exactly the files reported kept, nothing half-written beside them
    assert sorted(p.name for p in out.parent.iterdir()) == ["tiny.onnx", "tiny.torchscript"]
    for entry in report["files"]:
        check = entry["verification"]
        assert entry["size_bytes"] == Path(entry["path"]).stat().st_size > 0
        # real detections compared, every one matched within the tolerances
        assert check["compared"] > 0 and check["matched"] + check["tied"] == check["compared"]
        assert check["unmatched"] == 0 and check["matched"] > 0
        assert check["max_box_diff_px"] <= report["tolerances"]["box_px"] == 0.01
        assert check["max_score_diff"] <= report["tolerances"]["score"] == 0.001
        assert check["agreement_map50"] >= check["min_agreement_map50"] == 0.999
        assert check["torch_ms"] > 0 and check["exported_ms"] > 0 and check["images"] == len(report["check_images"])
    # the check covered several sizes, a portrait and a landscape picture
    dims = [(image["width"], image["height"]) for image in report["check_images"]]
    assert len(set(dims)) >= 3 and any(h > w for w, h in dims) and any(w > h for w, h in dims)


def test_a_file_that_fails_its_check_is_reported_refused_and_not_written(tiny_run, real_images, tmp_path,
                                                                         monkeypatch):
    """The refuse path, on every machine: the parity threshold raised out of reach."""
    from rcnn_cli.commands import export
    from rcnn_cli.errors import JobFailed
    from rcnn_cli.export import verify

    monkeypatch.setattr(verify, "MIN_AGREEMENT_MAP50", 1.01)
    options = export.ExportOptions(tiny_run / "checkpoints" / "best.ckpt", [".onnx"], out=tmp_path / "out" / "t.onnx",
                                   images=[str(real_images)], json_path=tmp_path / "report.json")
    with pytest.raises(JobFailed, match="t.onnx disagreed with the torch model and were not written"):
        export.run(options)
    (entry,) = json.loads((tmp_path / "report.json").read_text())["files"]
    assert (entry["kind"], entry["kept"], entry["size_bytes"]) == ("fp32", False, None)
    assert entry["verification"]["compared"] > 0 and entry["verification"]["min_agreement_map50"] == 1.01
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_onnx_file_carries_class_names_and_takes_any_size(exported):
    _, out, _ = exported
    model = onnx.load(str(out))
    meta = {p.key: p.value for p in model.metadata_props}
    assert json.loads(meta["class_names"]) == ["circle", "square", "triangle"]
    image_input = model.graph.input[0].type.tensor_type
    assert image_input.elem_type == onnx.TensorProto.UINT8
    assert [d.dim_param for d in image_input.shape.dim] == ["", "height", "width"]


def test_predict_with_the_onnx_file_gives_the_checkpoints_json(exported, real_images, tmp_path):
    weights, out, _ = exported
    results = {}
    # batch size 1, as the exported graph runs: in a batch, pictures of one input size share oneDNN kernels
    # chosen for that batch size, a last-bit difference (docs/predict-and-serve.md#batch-size-and-results);
    # the checkpoint in exact fp32, as exported (auto may pick bf16 on this machine)
    for name, source in (("ckpt", weights), ("onnx", out), ("torchscript", out.with_suffix(".torchscript"))):
        precision = ["--precision", "fp32"] if name == "ckpt" else []
        run = run_rcnn("predict", str(real_images), "--weights", str(source), "--out", str(tmp_path / name),
                       "--conf", "0.05", "--no-draw", "--batch-size", "1", *precision, cwd=tmp_path)
        assert run.returncode == 0, run.stderr[-2000:]
        results[name] = json.loads((tmp_path / name / "predictions.json").read_text())
    assert sum(len(r["detections"]) for r in results["ckpt"]) > 0
    for name in ("onnx", "torchscript"):
        for ours, theirs in zip(results["ckpt"], results[name]):
            assert ours["image"] == theirs["image"]
            assert len(ours["detections"]) == len(theirs["detections"]), name
            for a, b in zip(ours["detections"], theirs["detections"]):
                assert a["label"] == b["label"]
                assert np.allclose(a["box"], b["box"], atol=0.02) and abs(a["score"] - b["score"]) < 1e-3


def test_torchvision_resnet50_weights_export_with_parity(tmp_path):
    """A torchvision fasterrcnn_resnet50_fpn file (seeded random weights, nothing downloaded)."""
    torch.manual_seed(0)
    reference = torchvision.models.detection.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    torch.save(reference.state_dict(), tmp_path / "tv_r50.pth")
    detector = Detector.load(tmp_path / "tv_r50.pth", min_size=320, max_size=480, box_score_thresh=0.02)
    images = check_images([str(p) for p in bccd_images(1) + facemask_images(1)], None, count=2)
    path = write_onnx(detector, tmp_path / "tv_r50.onnx", images[0])
    result = verify_export(detector.model, OnnxDetector(path), images)
    assert result.agreement.compared > 0
    assert result.passed, result.agreement


def test_torchvision_mobilenet_random_weights_export_with_parity(tmp_path):
    """Issue 18: seeded random fasterrcnn_mobilenet_v3_large_fpn weights with box_score_thresh=0 failed
    the check (98/500 matched) and ran 4x slower in onnxruntime than in torch. Its backbone features
    vanish (1e-7), so every RoI gets the same class scores: 100 detections at one score, whose
    order only rounding decides. And with no score threshold the detection NMS sees 1000 x 90
    boxes, one quadratic NMS in the class-offset form; per class, capped at 100, it is cheap."""
    torch.manual_seed(0)
    reference = torchvision.models.detection.fasterrcnn_mobilenet_v3_large_fpn(weights=None, weights_backbone=None)
    torch.save(reference.state_dict(), tmp_path / "tv_mobilenet.pth")
    detector = Detector.load(tmp_path / "tv_mobilenet.pth", min_size=320, max_size=480, box_score_thresh=0.0)
    images = check_images([str(p) for p in bccd_images(1)], None, count=1)
    path = write_onnx(detector, tmp_path / "tv_mobilenet.onnx", images[0])
    result = verify_export(detector.model, OnnxDetector(path), images)
    print(result.agreement, f"torch {result.torch_ms:.0f} ms/img, onnxruntime {result.exported_ms:.0f} ms/img")
    assert result.agreement.compared == 300 and result.agreement.tied > 0
    assert result.passed, result.agreement
    graph = onnx.load(str(path)).graph
    constants = {n.output[0]: onnx.numpy_helper.to_array(n.attribute[0].t).reshape(-1) for n in graph.node
                 if n.op_type == "Constant"}
    caps = [int(constants[n.input[2]][0]) for n in graph.node if n.op_type == "NonMaxSuppression"
            and n.input[2] in constants]
    assert 100 in caps, "the detection NMS is not capped per class"


def test_the_parity_check_fails_on_shifted_or_missing_detections():
    boxes = torch.tensor([[10.0, 10.0, 50.0, 60.0], [100.0, 80.0, 150.0, 120.0]])
    reference = [{"boxes": boxes, "scores": torch.tensor([0.9, 0.6]), "labels": torch.tensor([1, 2])}]
    swapped = [{"boxes": boxes.flip(0), "scores": torch.tensor([0.6, 0.9]), "labels": torch.tensor([2, 1])}]
    assert compare_detections(reference, swapped, 2, 0.05).passes(1e-2, 1e-3, 0.999)
    shifted = [{**reference[0], "boxes": boxes + torch.tensor([0.0, 0.0, 0.05, 0.0])}]
    result = compare_detections(reference, shifted, 2, 0.05)
    assert result.max_box_diff == pytest.approx(0.05, abs=1e-5) and not result.passes(1e-2, 1e-3, 0.999)
    missing = [{k: v[:1] for k, v in reference[0].items()}]
    result = compare_detections(reference, missing, 2, 0.05)
    assert result.unmatched == 1 and not result.passes(1e-2, 1e-3, 0.999)


def test_detections_tied_in_score_may_swap_but_nothing_else_may():
    """Scores equal to within runtime noise: which of the tied boxes NMS and the top-N cut keep
    depends on float rounding, so another runtime may keep others (seeded random MobileNet weights
    give 100 detections at one score). A swap at the same score is a tie; a missing detection, or a
    moved box at a score no other detection shares, is still a failure."""
    tied = torch.tensor([[10.0, 10.0, 50.0, 60.0], [100.0, 80.0, 150.0, 120.0], [200.0, 10.0, 240.0, 50.0]])
    scores = torch.tensor([0.9, 0.0114, 0.0114 + 1e-9])
    reference = [{"boxes": tied, "scores": scores, "labels": torch.tensor([1, 2, 2])}]
    elsewhere = tied.clone()
    elsewhere[1:] += 300.0                       # the runtime kept two other boxes at the tied score
    swapped = [{**reference[0], "boxes": elsewhere, "scores": scores.flip(0)[[2, 0, 1]]}]
    result = compare_detections(reference, swapped, 2, 0.0)
    assert (result.compared, result.unmatched, result.tied) == (3, 0, 2)
    assert result.max_box_diff == 0.0 and result.map50 == 1.0 and result.passes(1e-2, 1e-3, 0.999)
    moved = [{**reference[0], "boxes": tied + torch.tensor([300.0, 0.0, 300.0, 0.0])}]
    result = compare_detections(reference, moved, 2, 0.0)
    assert result.unmatched == 1 and result.tied == 2 and not result.passes(1e-2, 1e-3, 0.999)
    dropped = [{k: v[:2] for k, v in reference[0].items()}]
    result = compare_detections(reference, dropped, 2, 0.0)
    assert result.unmatched == 1 and not result.passes(1e-2, 1e-3, 0.999)


def test_a_graph_with_a_frozen_size_is_caught(tmp_path):
    """A plain trace of the eager batched model freezes the sample's size; the check must see it."""
    detector = Detector(model="resnet18_fpn", num_classes=3, min_size=160, max_size=256, box_score_thresh=0.0,
                        fpn_channels=64, representation_size=128)
    images = check_images([str(p) for p in bccd_images(1)], None, count=1)

    class Frozen(OnnxDetector):
        def __init__(self):
            self.class_names, self.category_ids = ["a", "b"], None
            self.input_dtype, self.score_threshold = "uint8", 0.0
            self.sample = images[0]

        def run_one(self, image):
            # what a frozen graph does: resizes every input as if it had the sample's shape
            resized = torch.nn.functional.interpolate(image[None].float(), size=self.sample.shape[-2:])[0]
            out = detector.model([resized.to(torch.uint8)])[0]
            scale = torch.tensor([image.shape[2] / self.sample.shape[2], image.shape[1] / self.sample.shape[1]] * 2)
            return out["boxes"] * scale, out["scores"], out["labels"]

    result = verify_export(detector.model, Frozen(), images)
    assert result.agreement.compared > 0 and not result.passed


@pytest.mark.parametrize("args, message", [
    (["--weights", "missing.ckpt"], "no such file"),
    (["--weights", "{weights}", "--input-dtype", "int16"], "--input-dtype int16"),
    (["--weights", "{weights}", "min_size"], "key=value"),
    (["--weights", "{weights}", "device=cuda"], "device=cuda: rcnn export traces the exact fp32 model on the CPU"),
])
def test_bad_export_arguments_are_one_line_exit_2(tiny_run, tmp_path, args, message):
    weights = str(tiny_run / "checkpoints" / "best.ckpt")
    result = run_rcnn("export", *[a.format(weights=weights) for a in args], cwd=tmp_path)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_a_corrupt_onnx_file_is_one_line_for_predict(tmp_path):
    (tmp_path / "broken.onnx").write_bytes(b"\x08\x07not really a model")
    image = tmp_path / "a.jpg"
    shutil.copy(bccd_images(1)[0], image)
    result = run_rcnn("predict", str(image), "--weights", str(tmp_path / "broken.onnx"), cwd=tmp_path)
    assert result.returncode == 2 and "not a readable ONNX model" in result.stderr
    assert "Traceback" not in result.stderr


def test_uint8_and_float_inputs_give_the_same_detections():
    images = [to_chw_tensor(str(bccd_images(1)[0]))]
    as_float = [images[0].float() / 255]
    torch.manual_seed(0)
    detector = Detector(model="resnet18_fpn", num_classes=3, min_size=160, max_size=256, box_score_thresh=0.0,
                        fpn_channels=64, representation_size=128)
    with torch.inference_mode():
        a, b = detector.model(images)[0], detector.model(as_float)[0]
    assert torch.equal(a["labels"], b["labels"]) and torch.allclose(a["boxes"], b["boxes"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_half_without_a_gpu_is_one_line_and_exit_2(tiny_run, tmp_path):
    weights = tiny_run / "checkpoints" / "best.ckpt"
    result = run_rcnn("export", "--weights", str(weights), "--format", "torchscript", "--half", cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "--half traces and checks the fp16 file on a GPU" in result.stderr
    assert "Traceback" not in result.stderr
    missing = run_rcnn("export", "--weights", str(weights), "--half", cwd=tmp_path)
    assert missing.returncode == 2 and "add --format torchscript" in missing.stderr


def test_a_torchscript_file_loads_in_a_fresh_process_that_never_imported_torchvision(exported):
    """The graph calls torchvision::roi_align and nms; a process that had not imported torchvision
    could not load it (seen on a GPU machine: 'Unknown builtin op: torchvision::roi_align')."""
    import subprocess
    import sys

    _, out, _ = exported
    code = ("import sys, torch\nfrom rcnn_cli.inference.exported import load_exported\n"
            "assert 'torchvision' not in sys.modules\n"
            f"runner = load_exported({str(out.with_suffix('.torchscript'))!r})\n"
            "found = runner.detect([torch.zeros(3, 96, 128, dtype=torch.uint8)])[0]\nprint('ok', len(found['boxes']))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.startswith("ok"), result.stderr[-2000:]


def test_the_python_api_refuses_model_settings_an_exported_file_would_ignore(exported):
    """Detector.load("x.onnx", box_score_thresh=...) used to run with the file's own threshold, silently."""
    from rcnn_cli.errors import UsageError

    _, out, _ = exported
    with pytest.raises(UsageError, match="model.box_score_thresh=0.3: an exported file runs as it was exported"):
        Detector.load(out, box_score_thresh=0.3)
    assert Detector.load(out, precision="auto").class_names     # what the runtime takes is accepted


def test_set_precision_on_an_exported_file_is_one_line_not_an_attribute_error(exported):
    """Detector.load("x.onnx").set_precision(...) passed None as the model (issue 25)."""
    from rcnn_cli.errors import UsageError

    _, out, _ = exported
    with pytest.raises(UsageError, match="an exported file runs as it was exported"):
        Detector.load(out).set_precision("bf16")


def test_an_export_of_a_model_that_detects_nothing_is_refused_in_one_line(tiny_run, tmp_path):
    """A check with zero reference detections used to pass (Agreement.passes took map50=None as a pass)."""
    out = run_rcnn("export", "--weights", str(tiny_run / "checkpoints" / "best.ckpt"), "--out",
                   str(tmp_path / "none.onnx"), "model.box_score_thresh=1.0", cwd=tmp_path)
    assert out.returncode == 1 and "detects nothing on the 5 check images" in out.stderr, out.stderr
    assert out.stderr.strip().count("\n") <= 1 and "Traceback" not in out.stderr
    assert list(tmp_path.iterdir()) == []


def test_no_real_images_to_check_on_is_one_line():
    from rcnn_cli.errors import UsageError
    from rcnn_cli.export.verify import check_images

    with pytest.raises(UsageError, match="no real images to check the exported file on"):
        check_images(None, None)
