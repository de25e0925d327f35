"""Each default written once (issue 27): the score floor a reduced precision is checked at is the model's own,
an exported file says its own, the Python API's default model is conf/'s, and every command's default
output folder lives under ``runs_root``. Expected values are typed here or read from conf/'s YAML files
directly, never computed by the code under test."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from helpers import TINY_TRAIN, compose, image_folder, tiny_images

# item 1: the 0.05 score floor

def test_the_precision_check_compares_at_the_models_own_score_floor(monkeypatch):
    """prepare_model compared the reduced path at 0.05 unless told, whatever the model kept: a model built
    with box_score_thresh=0.3 must be compared at 0.3 without the caller repeating it."""
    from rcnn_cli.api import Detector
    from rcnn_cli.data.samples import Samples
    from rcnn_cli.inference import predictor
    from rcnn_cli.inference.precision import Decision, Trial

    compared_at = []

    def measure(exact, reduced, images, num_classes, score_threshold, origin):
        compared_at.append(score_threshold)
        return Trial(1.0, 1.0, 1, len(images), origin)

    def decide(requested, device_type, samples, trial, key=None, **_):
        trial()
        return Decision(requested, "folded", "test")

    model = Detector(model="resnet18_fpn", num_classes=3, min_size=96, max_size=96, fpn_channels=64,
                     box_score_thresh=0.3, precision="fp32").model
    monkeypatch.setattr(predictor, "measure", measure)
    monkeypatch.setattr(predictor, "decide", decide)
    images = [torch.randint(0, 255, (3, 90, 120), dtype=torch.uint8)]
    predictor.prepare_model(model, "auto", torch.device("cpu"), samples=lambda: Samples(images, "test"))
    assert compared_at == [0.3]


def test_an_exported_file_states_its_own_score_floor():
    from rcnn_cli.inference.exported import ExportedDetector

    meta = {"class_names": json.dumps(["a", "b"]), "input_dtype": "uint8", "score_threshold": "0.3"}
    assert ExportedDetector(meta, Path("x.onnx")).score_threshold == 0.3


@pytest.mark.parametrize("missing", ["score_threshold", "input_dtype"])
def test_an_exported_file_without_its_score_floor_or_input_type_is_one_line(missing):
    """Every file rcnn export has written carries both (since its first version): one without them was not
    written by it, and a guessed 0.05 or uint8 would check precisions at the wrong floor or feed the wrong type."""
    from rcnn_cli.inference.exported import ExportedDetector, ExportError

    meta = {"class_names": json.dumps(["a", "b"]), "input_dtype": "uint8", "score_threshold": "0.3"}
    del meta[missing]
    with pytest.raises(ExportError) as raised:
        ExportedDetector(meta, Path("x.onnx"))
    message = str(raised.value)
    assert "\n" not in message and missing in message and "rcnn export" in message, message


# item 2: the Python API's default model

CONF = Path(__file__).resolve().parents[1] / "rcnn_cli" / "conf"


def default_model(conf: Path) -> str:
    """The model conf/config.yaml's defaults list names, read from the file, not composed."""
    listed = yaml.safe_load((conf / "config.yaml").read_text())["defaults"]
    return next(entry["model"] for entry in listed if isinstance(entry, dict) and "model" in entry)


def test_the_api_builds_the_model_conf_names_by_default():
    from rcnn_cli.api import Detector

    detector = Detector(num_classes=3, min_size=96, max_size=96, precision="fp32")
    assert detector.config["name"] == default_model(CONF)


def test_changing_the_default_model_in_conf_is_followed_by_the_api(tmp_path, monkeypatch):
    """Detector() and rcnn predict take their model from the one composed config: another default in
    config.yaml changes what Detector() builds, with nothing else edited."""
    import shutil

    from rcnn_cli.api import Detector
    from rcnn_cli.settings import compose

    conf = tmp_path / "conf"
    shutil.copytree(CONF, conf)
    text = (conf / "config.yaml").read_text()
    other = "mobilenet_v3_large_320_fpn"
    assert default_model(CONF) != other
    (conf / "config.yaml").write_text(text.replace(f"model: {default_model(CONF)}", f"model: {other}", 1))
    assert default_model(conf) == other
    monkeypatch.setattr(compose, "CONF_DIR", conf)
    detector = Detector(num_classes=3, precision="fp32")
    assert (detector.config["name"], detector.config["backbone"]) == (other, "mobilenet_v3_large_fpn")


# item 3: every default output folder lives under runs_root; an explicit --out (or run_dir) wins

def only_folders(root: Path) -> set[str]:
    return {p.name for p in root.iterdir() if p.is_dir()}


def test_data_check_pictures_move_with_runs_root_and_out_wins(tiny_run, tmp_path, monkeypatch):
    from rcnn_cli.commands import check
    from rcnn_cli.commands.options import CheckOptions

    monkeypatch.chdir(tmp_path)
    check.run(CheckOptions(overrides=[*TINY_TRAIN, "runs_root=elsewhere"], show=1))
    assert [p.suffix for p in (tmp_path / "elsewhere" / "data-check").iterdir()] == [".png"]
    assert only_folders(tmp_path) == {"elsewhere"}
    check.run(CheckOptions(overrides=[*TINY_TRAIN, "runs_root=unused"], show=1, out=tmp_path / "mine"))
    assert [p.suffix for p in (tmp_path / "mine").iterdir()] == [".png"]
    assert only_folders(tmp_path) == {"elsewhere", "mine"}


def test_the_api_label_issues_go_where_data_check_writes_them(tiny_run, tmp_path, monkeypatch):
    from rcnn_cli.api import label_issues

    monkeypatch.chdir(tmp_path)
    label_issues(tiny_run / "checkpoints" / "best.ckpt", ["runs_root=elsewhere"])
    assert (tmp_path / "elsewhere" / "data-check" / "label_issues.json").is_file()
    assert only_folders(tmp_path) == {"elsewhere"}


def test_predict_results_move_with_runs_root_and_out_wins(tiny_run, tmp_path, monkeypatch):
    from rcnn_cli.commands import predict
    from rcnn_cli.commands.options import PredictOptions

    image_folder(tmp_path / "photos", tiny_images(2))
    monkeypatch.chdir(tmp_path)
    weights = tiny_run / "checkpoints" / "best.ckpt"
    common = {"weights": weights, "precision": "fp32", "draw": False}
    predict.run(PredictOptions(["photos"], overrides=["runs_root=elsewhere"], **common))
    assert (tmp_path / "elsewhere" / "predict" / "predictions.json").is_file()
    predict.run(PredictOptions(["photos"], overrides=["runs_root=elsewhere"], **common))    # numbered, as before
    assert (tmp_path / "elsewhere" / "predict-2" / "predictions.json").is_file()
    assert only_folders(tmp_path) == {"photos", "elsewhere"}
    predict.run(PredictOptions(["photos"], overrides=["runs_root=unused"], out=tmp_path / "mine", **common))
    assert (tmp_path / "mine" / "predictions.json").is_file()
    assert only_folders(tmp_path) == {"photos", "elsewhere", "mine"}


def test_eval_results_move_with_runs_root_and_out_wins(tiny_run, tmp_path, monkeypatch):
    """A checkpoint outside a run's checkpoints/ folder is scored into runs_root/eval-<stem>; one inside a
    run into that run's eval/ (beside it, wherever runs_root points now)."""
    import shutil

    from rcnn_cli.commands import evaluate
    from rcnn_cli.commands.options import EvalOptions

    weights = shutil.copy(tiny_run / "checkpoints" / "best.ckpt", tmp_path / "mine.ckpt")
    in_run = tmp_path / "run" / "checkpoints" / "best.ckpt"      # a run of its own: never write into tiny_run
    in_run.parent.mkdir(parents=True)
    shutil.copy(weights, in_run)
    monkeypatch.chdir(tmp_path)
    result = evaluate.run(EvalOptions(Path(weights), ["trainer.accelerator=cpu", "runs_root=elsewhere"]))
    assert result.out_dir == Path("elsewhere") / "eval-mine" and (result.out_dir / "thresholds.json").is_file()
    assert only_folders(tmp_path) == {"elsewhere", "run"}
    scored = []
    monkeypatch.setattr(evaluate, "evaluate", lambda settings, out, *_, **__: scored.append(out) or
                        evaluate.EvalResult(None, out, 0))
    evaluate.run(EvalOptions(Path(weights), ["runs_root=unused"], out=tmp_path / "given"))
    ensemble = f"{weights},{weights}"
    evaluate.run(EvalOptions(ensemble, ["trainer.accelerator=cpu", "runs_root=elsewhere"]))
    evaluate.run(EvalOptions(in_run, ["runs_root=unused"]))
    assert scored == [tmp_path / "given", Path("elsewhere") / "eval-ensemble", tmp_path / "run" / "eval"]
    assert only_folders(tmp_path) == {"elsewhere", "run"}


def test_a_training_run_folder_moves_with_runs_root_and_run_dir_wins(tmp_path):
    from rcnn_cli.commands.train import resolve_run_dir

    assert resolve_run_dir(compose(*TINY_TRAIN, f"runs_root={tmp_path}", "name=mine")) == tmp_path / "mine"
    assert resolve_run_dir(compose(*TINY_TRAIN, "runs_root=unused", f"run_dir={tmp_path}/here")) == tmp_path / "here"
