"""``model.precision=auto`` may run an OpenVINO model compiled from the checkpoint (export/compiled.py): the
fastest OpenVINO path that agrees with the exact model on the model's own images and beats torch by
MIN_SPEEDUP, compiled once and cached; torch where none does, where OpenVINO is missing, and for fp32.

Which path is faster is set by the test (``time_path`` is replaced by a clock that runs the real path for its
detections and reports the seconds given), so both branches run on any CPU. The one real compile of the tiny
checkpoint happens once per module; the tests that count compiles copy its IR."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import torch

from rcnn_cli.commands import serve
from rcnn_cli.errors import UsageError
from rcnn_cli.export import compiled
from rcnn_cli.inference import precision
from rcnn_cli.settings.resolve import resolve

F32 = "openvino f32"
INT8 = "openvino int8"
INT8_BF16 = "openvino int8 bf16"
REAL_PATHS_HERE = compiled.openvino_paths_here     # before any test replaces it


@pytest.fixture(scope="module")
def real_ir(tiny_run, tmp_path_factory) -> Path:
    """The tiny checkpoint's f32 IR, compiled for real once (export/compiled.compile_openvino)."""
    from rcnn_cli.data.samples import sample_images
    from rcnn_cli.inference.predictor import load_predictor

    settings = resolve("predict", [], weights=str(tiny_run / "checkpoints" / "best.ckpt"))
    predictor = load_predictor(settings.cfg, settings.checkpoint, source=settings.weights, prepare=False)
    images = sample_images(None, predictor.dataset).images
    folder = tmp_path_factory.mktemp("real-ir")
    return compiled.compile_openvino(predictor, [F32], folder, images, [])[F32]


@pytest.fixture
def checkpoint(tiny_run, tmp_path) -> Path:
    """A copy of the tiny checkpoint that the test may touch (its cache key is its path, size and mtime)."""
    return Path(shutil.copy(tiny_run / "checkpoints" / "best.ckpt", tmp_path / "tiny.ckpt"))


@pytest.fixture
def compiles(real_ir, monkeypatch, tmp_path) -> list[str]:
    """auto compiles f32 only (int8's NNCF run costs ~20 s; the path list is tested on its own), and each
    compile, counted, copies the real IR."""
    monkeypatch.setenv(compiled.SWITCH_ENV, "on")
    monkeypatch.setenv(precision.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(compiled, "openvino_paths_here", lambda: [F32])
    calls: list[str] = []

    def copy_real_ir(predictor, paths, folder, images, calibration):
        calls.append(predictor.config["weights"])
        shutil.copy(real_ir.with_suffix(".bin"), folder / "f32.bin")
        return {F32: Path(shutil.copy(real_ir, folder / "f32.xml"))}

    monkeypatch.setattr(compiled, "compile_openvino", copy_real_ir)
    return calls


def clock(monkeypatch, seconds: dict[str, float], moved: tuple[str, ...] = ()) -> None:
    """time_path runs each path for real and reports ``seconds[name]``; a path in ``moved`` has every label
    changed (its detections no longer agree with the exact model's)."""
    real = compiled.time_path

    def timed(name, detect, images):
        outputs, _ = real(name, detect, images)
        if name in moved:
            outputs = [{**o, "labels": o["labels"] % 3 + 1} for o in outputs]
        return outputs, seconds[name]

    monkeypatch.setattr(compiled, "time_path", timed)


def load(weights: Path, *overrides: str, said: list[str] | None = None):
    settings = resolve("predict", list(overrides), weights=str(weights))
    return compiled.load_fastest(settings.cfg, settings.checkpoint, typed=settings.typed, source=settings.weights,
                                 say=said.append if said is not None else None)


def own_images(predictor) -> list[torch.Tensor]:
    from rcnn_cli.data.samples import sample_images

    return sample_images(None, predictor.dataset).images


def detections(predictor, images) -> list[dict]:
    return [predictor.detect([image])[0] for image in images]


FASTER = {"exact": 1.0, "torch folded": 1.0, F32: 0.5}
FASTER_BF16 = {**FASTER, "openvino bf16": 0.9}


def test_auto_runs_openvino_where_it_agrees_and_is_faster(checkpoint, compiles, monkeypatch):
    clock(monkeypatch, FASTER)
    said: list[str] = []
    predictor = load(checkpoint, said=said)
    assert predictor.runs_as == "auto: openvino f32" and predictor.model is None
    assert predictor.decision.trial.agreement >= precision.MIN_AGREEMENT_MAP50 and predictor.decision.trial.compared
    assert "2.00x torch folded" in predictor.decision.line()
    assert len(said) == 1 and said[0].startswith(f"auto: compiled {F32} from tiny.ckpt") and " s, once " in said[0]
    exact = load(checkpoint, "model.precision=fp32")
    images = own_images(exact)
    for ours, theirs in zip(detections(predictor, images), detections(exact, images)):
        assert torch.equal(ours["labels"], theirs["labels"])
        assert torch.allclose(ours["boxes"], theirs["boxes"], atol=0.05)


@pytest.mark.parametrize("seconds, moved, why", [
    ({"exact": 1.0, "torch folded": 1.0, F32: 0.95}, (), f"{F32} 1.05x"),            # not MIN_SPEEDUP faster
    ({"exact": 1.0, "torch folded": 1.0, F32: 0.2}, (F32,), f"{F32} 5.00x but agreement 0."),   # moves detections
])
def test_auto_stays_on_torch_where_openvino_is_not_faster_or_disagrees(checkpoint, compiles, monkeypatch,
                                                                       seconds, moved, why):
    clock(monkeypatch, seconds, moved)
    predictor = load(checkpoint)
    assert predictor.runs_as == "auto: folded" and predictor.model is not None
    assert "no OpenVINO path agrees" in predictor.decision.reason and why in predictor.decision.reason
    no_ir_kept = not (Path(precision.cache_dir()) / compiled.compile_key(dict(predictor.config), [F32])).exists()
    assert no_ir_kept


def test_without_openvino_auto_chooses_among_torch_paths_and_says_nothing(checkpoint, compiles, monkeypatch):
    monkeypatch.setattr(compiled, "openvino_paths_here", REAL_PATHS_HERE)
    monkeypatch.setitem(sys.modules, "openvino", None)      # as an install without the export extra
    assert compiled.openvino_paths_here() == []
    said: list[str] = []
    predictor = load(checkpoint, said=said)
    assert predictor.runs_as == "auto: folded" and not said and not compiles
    assert "OpenVINO" not in predictor.decision.line()


def test_the_paths_auto_may_compile_follow_the_hardware_and_the_switch(monkeypatch):
    from rcnn_cli import hardware

    monkeypatch.setenv(compiled.SWITCH_ENV, "on")
    with hardware.override("avx2"):
        assert REAL_PATHS_HERE() == [F32, INT8]
    for bf16_native in ("avx512_bf16", "amx"):      # the int8 IR's float tail may also run bf16
        with hardware.override(bf16_native):
            assert REAL_PATHS_HERE() == [F32, "openvino bf16", INT8, INT8_BF16]
    monkeypatch.setitem(sys.modules, "nncf", None)      # no NNCF: no int8 IR, at either hint
    with hardware.override("amx"):
        assert REAL_PATHS_HERE() == [F32, "openvino bf16"]
    monkeypatch.setenv(compiled.SWITCH_ENV, "off")
    assert REAL_PATHS_HERE() == []
    monkeypatch.setenv(compiled.SWITCH_ENV, "of")
    with pytest.raises(UsageError, match="RCNN_AUTO_OPENVINO=of: did you mean off"):
        REAL_PATHS_HERE()


def test_the_second_run_reuses_the_compiled_model_and_a_change_compiles_again(checkpoint, compiles, monkeypatch):
    clock(monkeypatch, FASTER)
    first = load(checkpoint)
    images = own_images(load(checkpoint, "model.precision=fp32"))
    said: list[str] = []
    second = load(checkpoint, said=said)
    assert len(compiles) == 1 and not said
    assert second.runs_as == "auto: openvino f32" and second.decision.cached
    for a, b in zip(detections(first, images), detections(second, images)):
        assert all(torch.equal(a[key], b[key]) for key in ("boxes", "scores", "labels"))
    load(checkpoint, "model.box_nms_thresh=0.4")          # other settings: another graph
    assert len(compiles) == 2
    checkpoint.write_bytes(checkpoint.read_bytes())      # the same path, written again (a retrained model)
    load(checkpoint)
    assert len(compiles) == 3
    # another set of candidates (an install that gained NNCF, a release that added a path): decided again
    monkeypatch.setattr(compiled, "openvino_paths_here", lambda: [F32, "openvino bf16"])
    monkeypatch.setitem(FASTER_BF16, "openvino bf16", 0.9)
    clock(monkeypatch, FASTER_BF16)
    load(checkpoint)
    assert len(compiles) == 4


def test_fp32_never_touches_openvino(checkpoint, compiles, monkeypatch):
    from rcnn_cli.inference import exported

    def refuse(*args, **kwargs):
        raise AssertionError("fp32 ran OpenVINO")

    monkeypatch.setattr(exported, "OpenVinoDetector", refuse)
    predictor = load(checkpoint, "model.precision=fp32")
    assert predictor.runs_as == "fp32" and not compiles
    assert not Path(precision.cache_dir()).exists()


def test_serve_and_the_api_load_through_the_same_rule(checkpoint, compiles, monkeypatch):
    from rcnn_cli import Detector

    clock(monkeypatch, FASTER)
    _, served = serve.build(serve.ServeOptions(weights=checkpoint))
    assert served.runs_as == "auto: openvino f32"
    detector = Detector.load(checkpoint)
    assert detector.runs_as == "auto: openvino f32" and len(compiles) == 1
    with pytest.raises(UsageError, match="compiled from the checkpoint"):
        detector.set_precision("fp32")


def test_predict_says_what_the_first_use_compiled_and_runs_it(checkpoint, compiles, monkeypatch, tmp_path, capsys):
    import json

    from helpers import tiny_images

    from rcnn_cli.commands import predict

    clock(monkeypatch, FASTER)
    inputs = [str(p) for p in tiny_images(2)]
    for out in (tmp_path / "first", tmp_path / "second"):
        assert predict.run(predict.PredictOptions(inputs, checkpoint, out=out, draw=False)) == 0
    first, second = capsys.readouterr().err.split("results in " + str(tmp_path / "first"))
    assert first.count(f"auto: compiled {F32} from tiny.ckpt") == 1 and "auto: compiled" not in second
    assert "(auto: openvino f32 on cpu)" in first and "(auto: openvino f32 on cpu)" in second
    assert len(compiles) == 1
    assert json.loads((tmp_path / "first" / "predictions.json").read_text()) == \
        json.loads((tmp_path / "second" / "predictions.json").read_text())


@pytest.fixture
def int8_compiles(real_ir, monkeypatch, tmp_path) -> dict[str, list]:
    """auto compiles f32, int8 and int8 bf16 through the real compile_openvino, whose writer and quantizer copy
    the real f32 IR (NNCF's run costs ~20 s); every OpenVINO runner runs at f32 whatever hint it was built
    with (the tiny model's agreement at bf16 is not this test's question), and records that hint."""
    from rcnn_cli.export import exporters, int8
    from rcnn_cli.inference import exported

    monkeypatch.setenv(compiled.SWITCH_ENV, "on")
    monkeypatch.setenv(precision.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(compiled, "openvino_paths_here", lambda: [F32, INT8, INT8_BF16])
    calls: dict[str, list] = {"quantized": [], "hints": []}

    def copy_ir(path: Path) -> Path:
        shutil.copy(real_ir.with_suffix(".bin"), path.with_suffix(".bin"))
        return Path(shutil.copy(real_ir, path))

    def quantize(source, path, calibration):
        calls["quantized"].append(source.name)
        return copy_ir(path)

    real_runner = exported.OpenVinoDetector

    def runner(path, device="cpu", precision="fp32", requests=1):
        calls["hints"].append((Path(path).name, precision))
        return real_runner(path, device, "fp32", requests)

    monkeypatch.setattr(exporters, "write_openvino", lambda predictor, path, sample: copy_ir(path))
    monkeypatch.setattr(int8, "quantize_openvino", quantize)
    monkeypatch.setattr(exported, "OpenVinoDetector", runner)
    return calls


TAIL_FASTEST = {"exact": 1.0, "torch folded": 1.0, F32: 0.5, INT8: 0.4, INT8_BF16: 0.25}


@pytest.mark.parametrize("seconds, moved, runs, hint", [
    (TAIL_FASTEST, (), INT8_BF16, "bf16"),
    (TAIL_FASTEST, (INT8_BF16,), INT8, "fp32"),                 # the bf16 tail moves detections
    ({**TAIL_FASTEST, INT8: 0.3, INT8_BF16: 0.35}, (), INT8, "fp32"),        # the bf16 tail is slower
])
def test_the_int8_ir_with_a_bf16_tail_competes_under_the_same_rule(checkpoint, int8_compiles, monkeypatch,
                                                                   seconds, moved, runs, hint):
    clock(monkeypatch, seconds, moved)
    first = load(checkpoint)
    # one int8 IR, quantized once, timed at both hints; the f32 path runs the f32 IR
    assert int8_compiles["quantized"] == ["f32.xml"]
    assert int8_compiles["hints"][:3] == [("f32.xml", "fp32"), ("int8.xml", "fp32"), ("int8.xml", "bf16")]
    assert first.runs_as == f"auto: {runs}" and first.decision.runs == runs
    assert int8_compiles["hints"][3:] == [(compiled.IR_NAME, hint)]       # what runs: the kept int8 IR, its hint
    second = load(checkpoint)                                               # cached: no compile, same hint
    assert second.runs_as == f"auto: {runs}" and second.decision.cached
    assert int8_compiles["quantized"] == ["f32.xml"] and int8_compiles["hints"][4:] == [(compiled.IR_NAME, hint)]
