"""`rcnn train` and `rcnn eval` through the real CLI on a tiny shapes set: the run folder, resume,
evaluation outputs, and 2-process (gloo) evaluation equal to 1-process evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import TINY_TRAIN as TINY
from helpers import run_rcnn as rcnn


@pytest.fixture(scope="module")
def trained(tiny_run, tmp_path_factory) -> Path:
    """A private copy of the shared tiny run (resume below changes its checkpoints)."""
    import shutil

    work = tmp_path_factory.mktemp("resume")
    shutil.copytree(tiny_run.parent.parent, work, dirs_exist_ok=True)
    return work / "runs" / "tiny"


def test_a_run_folder_has_config_checkpoints_metrics_and_plot(trained):
    for name in ("config.yaml", "checkpoints/last.ckpt", "checkpoints/best.ckpt", "metrics.csv", "metrics.png"):
        assert (trained / name).is_file(), name
    assert any((trained / "tensorboard").iterdir())
    checkpoint = torch.load(trained / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert checkpoint["rcnn_cli"]["class_names"] == ["circle", "square", "triangle"]
    assert checkpoint["rcnn_cli"]["model"]["min_size"] == 128
    header = (trained / "metrics.csv").read_text().splitlines()[0]
    assert "val/map" in header and "val/loss" in header


def test_resume_continues_from_the_saved_step(trained, tmp_path):
    first = torch.load(trained / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert first["epoch"] == 0 and first["global_step"] > 0
    out = rcnn("train", *TINY, "trainer.max_epochs=2", f"resume={trained}/checkpoints/last.ckpt",
               cwd=trained.parent.parent)
    assert out.returncode == 0, out.stderr[-3000:]
    second = torch.load(trained / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert second["epoch"] == 1 and second["global_step"] == 2 * first["global_step"]


def test_eval_writes_metrics_thresholds_plots_and_coco_results(trained, tmp_path):
    out = rcnn("eval", "--weights", str(trained / "checkpoints" / "best.ckpt"), "--json", str(tmp_path / "m.json"),
               "--predictions", str(tmp_path / "p.json"), "--out", str(tmp_path / "eval"),
               "trainer.accelerator=cpu", cwd=trained.parent.parent)
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert {"map", "map_50", "voc07_map50", "voc_map50", "per_class"} <= set(metrics)
    assert set(metrics["per_class"]) == {"circle", "square", "triangle"}
    assert list((tmp_path / "eval").glob("*.png"))
    results = json.loads((tmp_path / "p.json").read_text())
    assert results and all({"image_id", "category_id", "bbox", "score"} <= set(r) for r in results)
    # a threshold for every class (predict refuses a file that misses one), each the score of a detection
    # it keeps (best F1 on this set) or 1.0 for a class never hit; not all of them 1.0
    thresholds = json.loads((tmp_path / "eval" / "thresholds.json").read_text())
    assert set(thresholds) == {"circle", "square", "triangle"}
    scores = [r["score"] for r in results]
    assert all(t == 1.0 or any(abs(t - score) < 1e-4 for score in scores) for t in thresholds.values()), thresholds
    assert min(thresholds.values()) < 1.0


def test_two_process_evaluation_equals_one_process(trained, tmp_path):
    weights = str(trained / "checkpoints" / "best.ckpt")
    single = rcnn("eval", "--weights", weights, "--json", str(tmp_path / "one.json"), "--out", str(tmp_path / "e1"),
                  "trainer.accelerator=cpu", cwd=trained.parent.parent)
    assert single.returncode == 0, single.stderr[-3000:]
    double = rcnn("eval", "--weights", weights, "--json", str(tmp_path / "two.json"), "--out", str(tmp_path / "e2"),
                  "trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu", cwd=trained.parent.parent)
    assert double.returncode == 0, double.stderr[-3000:]
    one = json.loads((tmp_path / "one.json").read_text())
    two = json.loads((tmp_path / "two.json").read_text())
    assert one == two


def test_a_misspelt_override_is_one_line_and_exit_2(tmp_path):
    out = rcnn("train", "optim.lrr=0.1", cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "optim.lrr" in out.stderr and "lr" in out.stderr


def test_a_sweep_runs_each_combination_in_its_own_folder(tiny_run, tmp_path):
    """In a folder of its own: the shared tiny run's folder is read by other tests."""
    out = rcnn("train", "--multirun", *TINY, "optim.lr=0.001,0.002", "trainer.max_epochs=1",
               "trainer.limit_train_batches=2", "trainer.limit_val_batches=2", "name=sweep", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    runs = tmp_path / "runs"
    assert (runs / "sweep" / "checkpoints" / "last.ckpt").is_file()
    assert (runs / "sweep-2" / "checkpoints" / "last.ckpt").is_file()
    assert "optim.lr=0.001" in out.stdout and "optim.lr=0.002" in out.stdout   # the summary table


def test_fine_tuning_on_other_classes_restarts_the_predictor(tiny_run, tmp_path):
    weights = tiny_run / "checkpoints" / "best.ckpt"
    out = rcnn("train", *TINY, f"model.weights={weights}", "dataset.class_names=[circle,square]",
               "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=2",
               "run_dir=runs/finetune", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "box predictor starts from scratch" in out.stdout + out.stderr
    checkpoint = torch.load(tmp_path / "runs" / "finetune" / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["rcnn_cli"]["class_names"] == ["circle", "square"]
