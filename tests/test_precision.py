"""The one precision rule (inference/precision.py) and the one hardware answer (hardware.py),
run through both kinds of CPU whatever this machine is: ``hardware.override`` (RCNN_HARDWARE in
subprocesses) makes the bf16-native and the AVX2-only branches reachable on either."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from rcnn_cli import Detector, hardware
from rcnn_cli.data.samples import Samples
from rcnn_cli.errors import UsageError
from rcnn_cli.inference import precision
from rcnn_cli.inference.precision import Trial, decide
from rcnn_cli.inference.predictor import prepare_model

NATIVE, AVX2 = "amx", "avx2"
SOME_IMAGES = Samples([torch.zeros(3, 8, 8, dtype=torch.uint8)], "test images")
NO_IMAGES = Samples(origin="no --images, and the model's shapes data is not readable here")


def no_trial() -> Trial:
    raise AssertionError("measured where the rule says nothing needs measuring")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(precision.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.mark.parametrize("name, native, kind", [("amx", True, "AMX"), ("avx512_bf16", True, "AVX-512 bf16"),
                                                ("avx2", False, "AVX2 only")])
def test_one_override_changes_what_the_hardware_reports_here_and_in_subprocesses(name, native, kind):
    before = hardware.current().profile
    with hardware.override(name) as found:
        assert hardware.current() is found and found.native_bf16 == native and found.kind == kind
        assert hardware.bf16_speedup("cpu") == (found.bf16_probe if native else 0.0)
        assert (hardware.training_autocast_dtype("cpu", processes=2) == torch.bfloat16) == native
        code = "from rcnn_cli import hardware; print(hardware.current().kind)"
        child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ.copy())
        assert child.stdout.strip() == kind, child.stderr
    assert hardware.current().profile == before


def test_an_unknown_profile_is_one_line_naming_the_nearest(monkeypatch):
    monkeypatch.setenv(hardware.ENV, "avx")
    with pytest.raises(UsageError, match="did you mean avx2"):
        hardware.current()


@pytest.mark.parametrize("trial, runs", [
    (Trial(2.0, 0.995, 40, 8, "val images"), "bf16"),        # native, faster, agrees
    (Trial(2.0, 0.93, 40, 8, "val images"), "folded"),       # moves detections
    (Trial(1.02, 0.999, 40, 8, "val images"), "folded"),     # not faster here
    (Trial(2.0, None, 0, 8, "val images"), "folded"),        # compared nothing: no proof
])
def test_auto_takes_bf16_only_where_native_faster_and_agreeing(cache, trial, runs):
    with hardware.override(NATIVE):
        decision = decide("auto", "cpu", lambda: SOME_IMAGES, lambda: trial)
    assert decision.runs == runs and decision.trial == trial
    assert f"{trial.compared} detections in 8 val images" in decision.line()


def test_auto_stays_exact_without_native_bf16_and_never_measures(cache):
    with hardware.override(AVX2):
        decision = decide("auto", "cpu", lambda: SOME_IMAGES, no_trial)
    assert decision.runs == "folded" and "no native bf16" in decision.reason


def test_auto_without_real_images_stays_exact_and_says_why(cache):
    with hardware.override(NATIVE):
        decision = decide("auto", "cpu", lambda: NO_IMAGES, no_trial)
    assert decision.runs == "folded" and NO_IMAGES.origin in decision.reason and "--images" in decision.reason


def test_a_decision_is_cached_per_weights_and_machine(cache, tmp_path):
    weights = tmp_path / "w.ckpt"
    weights.write_bytes(b"weights")
    with hardware.override(NATIVE):
        key = precision.cache_key(weights, {"min_size": 800}, "cpu")
        first = decide("auto", "cpu", lambda: SOME_IMAGES, lambda: Trial(2.0, 0.99, 9, 1, "val images"), key)
        again = decide("auto", "cpu", lambda: NO_IMAGES, no_trial, key)
        assert (first.runs, first.cached, again.runs, again.cached) == ("bf16", False, "bf16", True)
        assert "cached" in again.line()
    with hardware.override(AVX2):     # another machine: another key
        assert precision.cache_key(weights, {"min_size": 800}, "cpu") != key
    weights.write_bytes(b"retrained")     # another file under the same name: another key
    with hardware.override(NATIVE):
        assert precision.cache_key(weights, {"min_size": 800}, "cpu") != key


def test_a_decision_made_by_another_rcnn_cli_version_is_measured_again(cache, tmp_path, monkeypatch):
    """The paths themselves change between versions (which parts the bf16 path keeps in fp32, say): a
    decision measured on an old version's path must not be read by a new one."""
    from rcnn_cli import version

    weights = tmp_path / "w.ckpt"
    weights.write_bytes(b"weights")
    with hardware.override(NATIVE):
        key = precision.cache_key(weights, {"min_size": 800}, "cpu")
        monkeypatch.setattr(version, "__version__", version.__version__ + ".post1")
        assert precision.cache_key(weights, {"min_size": 800}, "cpu") != key


def test_asked_for_bf16_runs_bf16_with_its_agreement_printed(cache):
    with hardware.override(AVX2):     # torch bf16 executes on any x86 CPU, only slower
        decision = decide("bf16", "cpu", lambda: SOME_IMAGES, lambda: Trial(0.5, 0.97, 12, 1, "val images"))
    assert decision.runs == "bf16" and "agreement mAP50 0.970 on 12 detections" in decision.line()


def _shapes(count: int) -> list[torch.Tensor]:
    from rcnn_cli.data.readers.shapes import draw_image

    rng = np.random.default_rng(0)
    return [torch.from_numpy(np.array(draw_image(rng, 160)[0])).permute(2, 0, 1) for _ in range(count)]


def test_a_model_whose_bf16_disagrees_runs_exact_under_auto_and_says_why(cache):
    """An untrained model (seeded random weights: the extreme of barely trained) on the bf16-native
    branch: its bf16 detections agreed with fp32 at mAP50 about 0.92 on an EPYC with avx512_bf16."""
    torch.manual_seed(0)
    with hardware.override(NATIVE):
        detector = Detector(model="resnet18_fpn", num_classes=4, min_size=160, max_size=160, box_score_thresh=0.3,
                            precision="fp32")
        decision = prepare_model(detector.model, "auto", torch.device("cpu"), (), lambda: Samples(_shapes(3), "x"),
                                 None, 3)
    assert decision.trial.compared > 0 and decision.trial.agreement < precision.MIN_AGREEMENT_MAP50
    assert decision.runs == "folded" == detector.model.precision
    assert "would move detections" in decision.line()


def test_eval_scores_the_exact_model_unless_a_fast_path_is_asked_for(tiny_run):
    from helpers import compose

    weights = tiny_run / "checkpoints" / "best.ckpt"
    assert compose(weights=weights, command="eval").model.precision == "fp32"
    assert compose("model.precision=bf16", weights=weights, command="eval").model.precision == "bf16"
    assert compose(weights=weights, command="predict").model.precision == "auto"


def test_eval_of_a_fast_path_prints_the_exact_figures_beside_it(tiny_run, tmp_path):
    from helpers import run_rcnn

    out = run_rcnn("eval", "--weights", str(tiny_run / "checkpoints" / "best.ckpt"), "--precision", "bf16",
                   "--out", str(tmp_path / "e"), "--json", str(tmp_path / "m.json"), cwd=tiny_run.parent.parent)
    assert out.returncode == 0, out.stderr[-2000:]
    line = next(line for line in out.stderr.splitlines() if line.startswith("AP50:"))
    bf16 = json.loads((tmp_path / "m.json").read_text())["map_50"]
    assert "exact model" in line and f"at bf16 {bf16:.4f}" in line, out.stderr
    assert "precision bf16: runs bf16" in out.stderr and "detections in" in out.stderr


def test_a_comparison_with_no_reference_detection_fails():
    from rcnn_cli.eval.agreement import compare_detections

    empty = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)}
    found = {"boxes": torch.tensor([[1.0, 1.0, 9.0, 9.0]]), "scores": torch.tensor([0.9]), "labels": torch.tensor([1])}
    agreement = compare_detections([empty], [found], num_classes=2, score_threshold=0.05)
    assert agreement.compared == 0 and not agreement.passes(1.0, 1.0, 0.0) and not agreement.agrees(0.0)
    same = compare_detections([found], [found], num_classes=2, score_threshold=0.05)
    assert same.compared == 1 and same.passes(0.01, 1e-3, 0.999) and same.agrees(0.98)
