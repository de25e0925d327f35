"""What runs only on a GPU: mixed-precision training (bf16-mixed and 16-mixed with its loss scaler),
inference on CUDA against the CPU's, and `rcnn export --half` (an fp16 TorchScript file traced and
checked on the GPU). Skipped where no CUDA device is visible (CI has none); run on a lent GPU machine
(see docs/gpu-check.md, and docs/speed.md "On a GPU")."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import TINY_TRAIN, run_rcnn, tiny_images

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_mixed_precision_training_on_the_gpu_learns_and_saves_fp32_weights(tmp_path, precision):
    import csv

    out = run_rcnn("train", *TINY_TRAIN, "trainer.accelerator=gpu", f"trainer.precision={precision}",
                   "trainer.max_epochs=2", "run_dir=runs/gpu", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"precision: {precision}" in out.stdout + out.stderr
    rows = list(csv.DictReader(open(tmp_path / "runs" / "gpu" / "metrics.csv")))
    losses = [float(r["train/loss_step"]) for r in rows if r.get("train/loss_step")]
    assert losses and all(math.isfinite(v) for v in losses), losses
    from rcnn_cli.model.weights import read_weights_file

    state = read_weights_file(tmp_path / "runs" / "gpu" / "checkpoints" / "last.ckpt")["state_dict"]
    assert {v.dtype for v in state.values() if v.is_floating_point()} == {torch.float32}


def test_cuda_detections_agree_with_the_cpus(tiny_run):
    from rcnn_cli.api import Detector
    from rcnn_cli.eval.agreement import compare_detections

    weights = tiny_run / "checkpoints" / "best.ckpt"
    images = [str(p) for p in tiny_images(6)]
    on_cpu = Detector.load(weights, device="cpu", precision="fp32")
    on_gpu = Detector.load(weights, device="cuda", precision="fp32")
    reference = [on_cpu.predict(p) for p in images]
    candidate = [on_gpu.predict(p) for p in images]
    agreement = compare_detections(reference, candidate, len(on_cpu.class_names), 0.05, 1e-3)
    print(f"cuda vs cpu fp32: mAP50 {agreement.map50}, {agreement.matched}/{agreement.compared} matched")
    assert agreement.compared > 0 and agreement.agrees(0.99)     # a comparison of nothing is a failure


@pytest.fixture(scope="module")
def half_export(tiny_run, tmp_path_factory):
    """``rcnn export --format torchscript --half --json`` of the tiny run, in a folder of its own ->
    (the fp32 file, the process, the report)."""
    import json

    work = tmp_path_factory.mktemp("half")
    out = work / "files" / "tiny.torchscript"
    result = run_rcnn("export", "--weights", str(tiny_run / "checkpoints" / "best.ckpt"), "--format", "torchscript",
                      "--half", "--out", str(out), "--json", str(work / "report.json"), cwd=work)
    print(result.stderr[-1500:])
    assert (work / "report.json").is_file(), result.stderr[-3000:]
    return out, result, json.loads((work / "report.json").read_text())


def test_half_export_decision_at_the_shipped_threshold_follows_the_reported_agreement(half_export):
    from helpers import reported

    from rcnn_cli.export.verify import MIN_REDUCED_AGREEMENT_MAP50

    out, result, report = half_export
    assert reported(report, "fp32")["kept"]
    entry = reported(report, "fp16")
    check = entry["verification"]
    assert check["compared"] > 0 and check["min_agreement_map50"] == MIN_REDUCED_AGREEMENT_MAP50
    agrees = (check["unmatched"] == 0 if check["agreement_map50"] is None
              else check["agreement_map50"] >= MIN_REDUCED_AGREEMENT_MAP50)
    assert entry["kept"] == agrees == (result.returncode == 0) == out.with_name("tiny.fp16.torchscript").exists()


@pytest.mark.parametrize("threshold, kept", [(0.0, True), (1.01, False)])
def test_half_export_is_kept_or_refused_by_its_agreement_and_predict_runs_a_kept_one(
        tiny_run, half_export, tmp_path, monkeypatch, threshold, kept):
    """Both ways of the decision on every GPU: any agreement passes 0.0, none passes 1.01."""
    import shutil

    from rcnn_cli.export import pipeline
    from rcnn_cli.export.verify import check_images
    from rcnn_cli.inference.exported import load_exported
    from rcnn_cli.inference.predictor import load_predictor
    from rcnn_cli.settings.resolve import resolve

    settings = resolve("export", [], weights=tiny_run / "checkpoints" / "best.ckpt")
    detector = load_predictor(settings.cfg, settings.checkpoint, prepare=False)
    script = tmp_path / "tiny.torchscript"
    shutil.copy(half_export[0], script)
    monkeypatch.setattr(pipeline, "MIN_REDUCED_AGREEMENT_MAP50", threshold)
    files = []
    assert pipeline.write_half(detector, script, check_images(None, detector.dataset), "uint8", files) == kept
    half = tmp_path / "tiny.fp16.torchscript"
    assert [(f["path"], f["kind"], f["kept"]) for f in files] == [(str(half), "fp16", kept)]
    assert files[0]["verification"]["compared"] > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["tiny.torchscript"] + [half.name] * kept)
    if kept:
        runner = load_exported(half)
        assert runner.runs_as == "torchscript fp16 backbone, cuda"
        found = runner.detect([torch.randint(0, 255, (3, 160, 200), dtype=torch.uint8)])[0]
        assert found["boxes"].device.type == "cpu" and found["scores"].dtype == torch.float32
        predicted = run_rcnn("predict", str(tiny_images(2)[0]), "--weights", str(half), "--out",
                             str(tmp_path / "pred"), "--format", "json", cwd=tmp_path)
        assert predicted.returncode == 0, predicted.stderr[-2000:]


def test_benchmark_times_the_torch_columns_on_the_gpu(tmp_path):
    """On the lent H200 `rcnn benchmark` ran every column on the CPU (the models were never moved) and
    did not finish in 210 s; device=auto must put them on the GPU like every other command."""
    import json

    out = run_rcnn("benchmark", "model.min_size=96", "model.max_size=96", "dataset.num_images=24",
                   "dataset.image_size=96", "--count", "2", "--batch", "2", "--repeats", "1", "--warmup", "0",
                   "--formats", "torchscript", "--json", str(tmp_path / "b.json"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads((tmp_path / "b.json").read_text())
    assert result["device"] == "cuda" and "ours_int8" not in result["inference"]
    assert result["training"]["ours_auto"]["precision"] == "bfloat16"
    assert result["exported"]["torchscript_fp16"]["latency_batch1"]["median_s"] > 0     # timed, not skipped
