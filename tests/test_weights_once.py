"""Each command decides what its weights argument names once (``model.source.weights_source``,
called by ``settings.resolve``) and reads the file once; everything downstream is handed the answer.
Counted in-process on the real command line (Typer's runner), with the tiny run's checkpoint and an
ONNX file exported from it."""

from __future__ import annotations

import collections

import pytest
import torch
from helpers import tiny_images
from typer.testing import CliRunner

from rcnn_cli.cli import app
from rcnn_cli.model import source as source_module


@pytest.fixture
def counted(monkeypatch):
    """Counts of weights decisions and of torch.load calls while a command runs."""
    counts = collections.Counter()
    decide, load = source_module.weights_source, torch.load

    def counting_decide(given):
        counts["decisions"] += 1
        return decide(given)

    def counting_load(*args, **kwargs):
        counts["torch.load"] += 1
        return load(*args, **kwargs)

    import rcnn_cli.model.factory as factory
    import rcnn_cli.settings.resolve as resolve

    for module in (source_module, factory, resolve):
        monkeypatch.setattr(module, "weights_source", counting_decide)
    monkeypatch.setattr(torch, "load", counting_load)
    return counts


def invoke(*args: str) -> str:
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output[-2000:]
    return result.output


@pytest.mark.parametrize("command", ["predict", "eval", "export", "benchmark"])
def test_a_checkpoint_is_decided_and_read_once(command, tiny_run, tmp_path, counted):
    ckpt = str(tiny_run / "checkpoints" / "best.ckpt")
    image = str(tiny_images(1)[0])
    args = {
        "predict": ["predict", image, "--weights", ckpt, "--out", str(tmp_path / "out"), "--precision", "fp32"],
        "eval": ["eval", "--weights", ckpt, "--out", str(tmp_path / "eval")],
        # a score floor of 0: the export's check needs detections, whatever the tiny run's rounding learned
        "export": ["export", "--weights", ckpt, "--out", str(tmp_path / "model.onnx"), "--images", image,
                   "model.box_score_thresh=0.0"],
        "benchmark": ["benchmark", "--weights", ckpt, "--images", image, "--count", "1", "--batch", "1",
                      "--repeats", "1", "--warmup", "0"],
    }[command]
    invoke(*args)
    assert counted == {"decisions": 1, "torch.load": 1}


@pytest.mark.parametrize("command", ["predict", "eval"])
def test_an_ensemble_is_decided_once_and_each_member_read_once(command, tiny_run, tmp_path, counted):
    """Ensemble, and each member's kind, in the one decision; then each member's file read once."""
    members = ",".join(str(tiny_run / "checkpoints" / name) for name in ("best.ckpt", "last.ckpt"))
    image = str(tiny_images(1)[0])
    args = {
        "predict": ["predict", image, "--weights", members, "--out", str(tmp_path / "out"), "--precision", "fp32"],
        "eval": ["eval", "--weights", members, "--out", str(tmp_path / "eval")],
    }[command]
    invoke(*args)
    assert counted == {"decisions": 1, "torch.load": 2}     # two members: each file read once, by torch


def test_an_exported_file_is_decided_once_and_never_read_by_torch(tiny_run, tmp_path, counted):
    onnx = tmp_path / "model.onnx"
    image = str(tiny_images(1)[0])
    invoke("export", "--weights", str(tiny_run / "checkpoints" / "best.ckpt"), "--out", str(onnx), "--images", image,
           "model.box_score_thresh=0.0")
    counted.clear()
    invoke("predict", image, "--weights", str(onnx), "--out", str(tmp_path / "out"))
    assert counted == {"decisions": 1}
