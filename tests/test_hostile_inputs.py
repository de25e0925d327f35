"""Hostile inputs, second round (issue 26): output that would land on the inputs, Rich markup in names,
source lists and symlinks that loop, training settings that would crash after the run has started, and
an output folder that cannot be written. Each is one line (exit 2) before any work, or a named skip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import run_rcnn
from PIL import Image

from rcnn_cli.data.sources import expand_sources


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
