"""Hostile inputs, second round (issue 26): output that would land on the inputs, Rich markup in names,
source lists and symlinks that loop, training settings that would crash after the run has started, and
an output folder that cannot be written. Each is one line (exit 2) before any work, or a named skip."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import TINY_TRAIN, run_rcnn
from PIL import Image

from rcnn_cli.data.sources import expand_sources
from rcnn_cli.errors import UsageError
from rcnn_cli.settings.resolve import resolve
from rcnn_cli.settings.schema import ConfigError


def weights_of(tiny_run: Path) -> str:
    return str(tiny_run / "checkpoints" / "best.ckpt")


PICTURES = ("a.jpg", "b.jpg")


def photos(folder: Path, count: int = 2) -> dict[str, bytes]:
    """``count`` small pictures (a.jpg, b.jpg) in ``folder``; returns name -> bytes of everything in it,
    to show afterwards that nothing was overwritten."""
    folder.mkdir(parents=True, exist_ok=True)
    for seed, name in enumerate(PICTURES[:count]):
        pixels = np.random.RandomState(seed).randint(0, 255, (48, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / name)
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def predict_in_process(sources: list[str], tiny_run: Path, out: Path | str | None):
    from rcnn_cli.commands import predict

    return predict.run(predict.PredictOptions(sources, weights_of(tiny_run), out=Path(out) if out else None,
                                              precision="fp32", batch_size=2))


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-3000:]
    return lines[0]


# item 6: source lists and symlinks that loop

def test_a_source_list_that_lists_itself_names_the_loop(tmp_path, monkeypatch):
    photos(tmp_path, 1)
    monkeypatch.chdir(tmp_path)
    picture = PICTURES[0]
    Path("self.txt").write_text(f"{picture}\nself.txt\n")
    Path("a.txt").write_text("b.txt\n")
    Path("b.txt").write_text(f"a.txt\n{picture}\n")
    for source, loop in (("self.txt", "self.txt -> self.txt"), ("a.txt", "a.txt -> b.txt -> a.txt")):
        images, _, problems = expand_sources([source])
        assert [p.name for p in images] == [picture]
        assert problems == [f"{loop}: the source lists name each other in a loop; read once"]


def test_looping_symlinks_in_a_folder_are_named_in_the_skipped_list(tmp_path):
    photos(tmp_path, 1)
    (tmp_path / "self.jpg").symlink_to("self.jpg")
    (tmp_path / "ping.jpg").symlink_to("pong.jpg")
    (tmp_path / "pong.jpg").symlink_to("ping.jpg")
    (tmp_path / "gone.png").symlink_to("nowhere.png")
    images, _, problems = expand_sources([str(tmp_path)])
    assert [p.name for p in images] == [PICTURES[0]]
    assert sorted(Path(p.split(":")[0]).name for p in problems) == ["gone.png", "ping.jpg", "pong.jpg", "self.jpg"]
    assert any("symlink loop" in p for p in problems) and any("points to nothing" in p for p in problems)


# item 5: user and data text is printed as text, never as Rich markup

@pytest.fixture(scope="module")
def marked_run(tiny_run, tmp_path_factory):
    """``rcnn predict .`` in a folder with a corrupt picture at ``x[/b]y.jpg`` (folder ``x[``), into
    ``--out 'o[/b]x'`` inside that folder: names that Rich would read as a closing tag."""
    work = tmp_path_factory.mktemp("markup")
    photos(work)
    (work / "x[").mkdir()
    (work / "x[" / "b]y.jpg").write_bytes(b"not a picture")
    result = run_rcnn("predict", ".", "--weights", weights_of(tiny_run), "--out", "o[/b]x", "--format", "json",
                      "--format", "yolo", "--precision", "fp32", cwd=work)
    return work, result


def test_markup_in_file_names_and_out_is_printed_as_text(marked_run):
    work, result = marked_run
    assert "MarkupError" not in result.stderr and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.returncode == 1                         # the corrupt picture was skipped
    assert "skipped: x[/b]y.jpg" in result.stderr
    assert "results in o[/b]x (" in result.stderr
    assert len(json.loads((work / "o[" / "b]x" / "predictions.json").read_text())) == 2


def test_an_error_naming_a_markup_path_is_printed_as_text(tmp_path):
    (tmp_path / "w.ckpt").write_bytes(b"")
    result = run_rcnn("predict", "nowhere[/b].jpg", "--weights", "w.ckpt", cwd=tmp_path)
    assert result.returncode == 2
    assert "nowhere[/b].jpg" in one_line(result.stderr)


def test_data_check_prints_file_names_and_box_values_as_text(tmp_path):
    images = tmp_path / "img"
    (images / "x[").mkdir(parents=True)
    pixels = np.random.RandomState(0).randint(0, 255, (40, 48, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(images / "x[" / "b]y.jpg")
    Image.fromarray(pixels).save(images / "same.jpg")              # a duplicate: the group line names both
    names = ["x[/b]y.jpg", "same.jpg", "gone[/i].jpg"]              # the last is missing
    entries = [{"id": i + 1, "file_name": name, "width": 48, "height": 40} for i, name in enumerate(names)]
    boxes = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [5, 5, 20, 20], "iscrowd": 0},
             {"id": 2, "image_id": 2, "category_id": 1, "bbox": [5, 5, 20, 20], "iscrowd": 0},
             {"id": 3, "image_id": 2, "category_id": 1, "bbox": [float("nan"), 10.0, float("nan"), 30.0]}]
    (tmp_path / "a.json").write_text(json.dumps({"images": entries, "annotations": boxes,
                                                 "categories": [{"id": 1, "name": "[bold]cell"}]}))
    result = run_rcnn("data", "check", "dataset=coco", f"dataset.train_json={tmp_path}/a.json",
                      f"dataset.train_images={images}", "dataset.val_fraction=0", cwd=tmp_path)
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.returncode == 0
    assert "box 1: [nan, 10.0, nan, 40.0]" in result.stdout          # as corners: x, y, x + w, y + h
    assert "x[/b]y.jpg" in result.stdout and "gone[/i].jpg" in result.stdout and "[bold]cell" in result.stdout


# items 1 and 7: output never overwrites an input, and output folders are never read as inputs

def test_out_that_is_the_input_folder_is_refused_and_nothing_is_written(tiny_run, tmp_path):
    before = photos(tmp_path / "photos")
    result = run_rcnn("predict", "photos", "--weights", weights_of(tiny_run), "--out", "photos", cwd=tmp_path)
    assert result.returncode == 2
    assert "--out photos" in one_line(result.stderr)
    assert {p.name: p.read_bytes() for p in (tmp_path / "photos").iterdir()} == before


@pytest.mark.parametrize("how", ["symlink", "dot", "parent", "nested input"])
def test_out_spelled_another_way_that_holds_the_inputs_is_refused(tiny_run, tmp_path, monkeypatch, how):
    photos(tmp_path / "photos")
    monkeypatch.chdir(tmp_path)
    sources, out = ["photos"], "photos"
    if how == "symlink":
        (tmp_path / "link").symlink_to(tmp_path / "photos")
        out = "link"
    elif how == "dot":
        monkeypatch.chdir(tmp_path / "photos")
        sources, out = ["."], "."
    elif how == "parent":
        out = str(tmp_path)
    else:
        photos(tmp_path / "photos" / "sub", 1)
        sources = [str(tmp_path / "photos" / "sub")]
    with pytest.raises(UsageError, match="--out .*holds the input"):
        predict_in_process(sources, tiny_run, out)


def test_out_naming_an_input_file_is_one_line(tiny_run, tmp_path, monkeypatch):
    # Item 7: was FileExistsError from mkdir, after the whole inference.
    before = photos(tmp_path / "photos")
    monkeypatch.chdir(tmp_path)
    first = sorted(before)[0]
    with pytest.raises(UsageError, match=re.escape(f"--out photos/{first}: ")):
        predict_in_process(["photos"], tiny_run, f"photos/{first}")
    (tmp_path / "notes.txt").write_text("not a folder")
    with pytest.raises(UsageError, match="--out notes.txt: a file, not a folder"):
        predict_in_process(["photos"], tiny_run, "notes.txt")


def test_a_second_predict_does_not_read_the_first_ones_output(marked_run, monkeypatch):
    work, _ = marked_run
    drawn = list((work / "o[" / "b]x").rglob("*.jpg"))
    assert drawn                                          # pictures and YOLO image links were written ...
    monkeypatch.chdir(work)
    images, _, _ = expand_sources(["."])
    assert sorted(map(str, images)) == sorted([*PICTURES, "x[/b]y.jpg"])   # ... not read


def test_an_output_folder_named_as_a_source_is_a_named_skip(marked_run, monkeypatch):
    work, _ = marked_run
    monkeypatch.chdir(work)
    images, _, problems = expand_sources(["o[/b]x"])
    assert images == [] and len(problems) == 1 and "rcnn predict wrote it" in problems[0]


# item 3: training settings that would crash after the run started are refused by the settings rule

@pytest.mark.parametrize("override, message", [
    ("trainer.max_epochs=-1", "trainer.max_epochs=-1: must be"),
    ("trainer.max_epochs=0", "trainer.max_epochs=0: must be"),
    ("optim.lr=nan", "optim.lr=nan: must be a finite number"),
    ("optim.base_lr=inf", "optim.base_lr=inf: must be a finite number"),
    ("model.max_size=0", "model.max_size=0: must be"),
    ("+foo=bar", "unknown config key 'foo'"),
    ("+sed=1", "did you mean seed"),
    ("+trainr.max_steps=5", "did you mean trainer"),
])
def test_a_setting_that_would_crash_training_is_one_line(override, message):
    with pytest.raises(ConfigError, match=message) as caught:
        resolve("train", [*TINY_TRAIN, override])
    assert "\n" not in str(caught.value)


def test_a_config_dir_that_is_not_a_folder_is_one_line(tmp_path):
    (tmp_path / "file.yaml").write_text("a: 1\n")
    with pytest.raises(ConfigError, match="--config-dir .*nowhere: no such folder"):
        resolve("train", [], config_dir=tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="--config-dir .*file.yaml: a file, not a folder"):
        resolve("train", [], config_dir=tmp_path / "file.yaml")


def test_a_refused_training_setting_leaves_no_run_folder(tmp_path):
    result = run_rcnn("train", *TINY_TRAIN, "optim.lr=nan", "run_dir=runs/nan", cwd=tmp_path)
    assert result.returncode == 2
    assert "optim.lr=nan" in one_line(result.stderr)
    assert not (tmp_path / "runs").exists()


# item 4: an output folder that cannot be written: one line, before inference

def test_an_out_folder_that_cannot_be_written_is_refused_before_inference(tiny_run, tmp_path, monkeypatch):
    # Tests run as root here, and chmod does not stop root: a folder without write permission is
    # simulated where the toolkit creates every file (files.atomic_path's temp file), as the OS would refuse.
    import tempfile

    from rcnn_cli.inference import predictor

    photos(tmp_path / "photos")
    locked = tmp_path / "locked"
    locked.mkdir()
    real_mkstemp = tempfile.mkstemp

    def refuses_in_locked(*args, dir=None, **kwargs):
        if dir is not None and Path(dir).resolve().is_relative_to(locked):
            raise PermissionError(13, "Permission denied", str(dir))
        return real_mkstemp(*args, dir=dir, **kwargs)

    def no_inference(*args, **kwargs):
        raise AssertionError("the detector was loaded before --out was checked")

    monkeypatch.setattr(tempfile, "mkstemp", refuses_in_locked)
    monkeypatch.setattr(predictor, "load_predictor", no_inference)
    with pytest.raises(UsageError, match=re.escape(f"--out {locked}: cannot write there (Permission denied)")):
        predict_in_process([str(tmp_path / "photos")], tiny_run, locked)
    assert list(locked.iterdir()) == []


def private_read_only_mounts() -> bool:
    """Whether this machine lets an unprivileged namespace bind-mount a folder read-only (not every CI does)."""
    import tempfile

    try:
        with tempfile.TemporaryDirectory() as folder:
            probe = f"mount --bind -o ro {folder} {folder} && ! touch {folder}/x 2>/dev/null"
            return subprocess.run(["unshare", "-rm", "sh", "-c", probe], capture_output=True).returncode == 0
    except OSError:
        return False


@pytest.mark.skipif(not private_read_only_mounts(), reason="needs unshare -rm and mount for a read-only folder")
def test_a_read_only_out_is_refused_before_inference(tiny_run, tmp_path):
    # A real read-only bind mount, private to one process (user and mount namespace): nothing outside sees it.
    photos(tmp_path / "photos")
    (tmp_path / "ro").mkdir()
    command = (f"mount --bind -o ro ro ro && exec {sys.executable} -m rcnn_cli.cli predict photos "
               f"--weights {weights_of(tiny_run)} --out ro/preds")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    result = subprocess.run(["unshare", "-rm", "sh", "-c", command], capture_output=True, text=True, cwd=tmp_path,
                            env=env, timeout=300)
    assert result.returncode == 2
    assert "--out ro/preds: cannot write there (Read-only file system)" in one_line(result.stderr)
