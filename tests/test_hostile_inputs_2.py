"""Hostile inputs, second round (issue 26), items 8 and 9: a predict interrupted with Ctrl-C keeps what it
finished, and messages say what is really wrong (a renamed model file, YOLO labels in pixels, a training
split left without boxes, temp files a killed process left behind)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import compose, tiny_images
from PIL import Image

from rcnn_cli.errors import RcnnError

# item 8: Ctrl-C in predict keeps the finished images' results

def start_predict(tiny_run: Path, work: Path, count: int) -> tuple[subprocess.Popen, list[str]]:
    """``rcnn predict many --out out`` over ``count`` copies of the tiny shapes pictures, in a process group
    of its own (Ctrl-C signals the whole foreground group: the DataLoader workers too)."""
    (work / "many").mkdir()
    pictures = tiny_images(48)
    names = [f"{i:04d}.jpg" for i in range(count)]
    for i, name in enumerate(names):
        shutil.copyfile(pictures[i % len(pictures)], work / "many" / name)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    command = [sys.executable, "-m", "rcnn_cli.cli", "predict", "many", "--weights",
               str(tiny_run / "checkpoints" / "best.ckpt"), "--out", "out", "--batch-size", "1",
               "--precision", "fp32", "--format", "json", "--format", "csv"]
    # A child inherits an ignored SIGINT (a suite started in the background, `make test &`: the run finished
    # all 400 pictures and exited 0), so the test restores the default that Python turns into Ctrl-C.
    process = subprocess.Popen(command, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    return process, [f"many/{name}" for name in names]


def wait_for_results(process: subprocess.Popen, journal: Path, lines: int, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        if journal.is_file() and journal.read_text().count("\n") >= lines:
            return
        time.sleep(0.05)
    process.kill()
    pytest.fail(f"no {lines} results in {journal} (exit {process.poll()}): {process.communicate()[1][-3000:]}")


def test_ctrl_c_in_predict_writes_the_finished_images_results(tiny_run, tmp_path):
    process, inputs = start_predict(tiny_run, tmp_path, 400)
    out = tmp_path / "out"
    wait_for_results(process, out / "predictions.jsonl", 3)
    os.killpg(process.pid, signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130 and "Traceback" not in stderr, stderr[-3000:]
    said = [line for line in stderr.splitlines() if "interrupted" in line]
    assert len(said) == 1, stderr[-3000:]
    done = re.fullmatch(r"interrupted after (\d+) of 400 images; their results are in out "
                        r"\(predictions\.json, predictions\.csv\)", said[0].strip())
    assert done, said
    results = json.loads((out / "predictions.json").read_text())
    assert [r["image"] for r in results] == inputs[:int(done.group(1))]      # in input order, none missing
    assert {p.stem for p in out.glob("*.jpg")} == {r["output_name"] for r in results}   # drawn = listed
    rows = (out / "predictions.csv").read_text().splitlines()[1:]
    assert {row.split(",")[0] for row in rows} <= set(inputs[:len(results)])
    assert not (out / "predictions.jsonl").exists()    # the journal is folded into the final files


# item 9a: a model file under another suffix is named for what it is

def onnx_model(path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph), path)


def torchscript_model(path: Path) -> None:
    import torch

    class AddOne(torch.nn.Module):
        def forward(self, x):
            return x + 1

    torch.jit.save(torch.jit.script(AddOne()), path)


@pytest.mark.parametrize("kind, says", [
    ("onnx", r"is an ONNX model, not a checkpoint; rename it to m\.onnx .*rcnn predict --weights m\.onnx"),
    ("torchscript", r"is a TorchScript model, not a checkpoint; rename it to m\.torchscript"),
    ("openvino", r"is an OpenVINO model \(XML\), not a checkpoint; rename it to m\.xml"),
    ("safetensors", r"is a safetensors file, not a PyTorch checkpoint"),
])
def test_a_model_file_renamed_ckpt_is_named_for_what_it_is(tmp_path, kind, says):
    from rcnn_cli.model.weights import WeightsError, read_weights_file

    path = tmp_path / "m.ckpt"
    if kind == "onnx":
        onnx_model(path)
    elif kind == "torchscript":
        torchscript_model(path)
    elif kind == "openvino":
        path.write_text('<?xml version="1.0"?>\n<net name="m" version="11">\n<layers/>\n</net>\n')
    else:
        header = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
        path.write_bytes(len(header).to_bytes(8, "little") + header + bytes(4))
    with pytest.raises(WeightsError, match=says) as caught:
        read_weights_file(path)
    assert "could run code" not in str(caught.value) and "\n" not in str(caught.value)


# item 9b: YOLO labels in pixels are one problem per file, not one per box

def yolo_set(root: Path, labels: dict[str, str]) -> None:
    (root / "images" / "train").mkdir(parents=True)
    (root / "labels" / "train").mkdir(parents=True)
    (root / "data.yaml").write_text("names: [cell]\n")
    for stem, text in labels.items():
        Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(root / "images" / "train" / f"{stem}.jpg")
        (root / "labels" / "train" / f"{stem}.txt").write_text(text)


def test_yolo_labels_in_pixels_are_reported_once_as_unnormalised(tmp_path):
    from rcnn_cli.data.readers.load import load_dataset

    yolo_set(tmp_path, {"pixels": "0 32 24 20 10\n0 10 10 8 8\n0 50 30 12 6\n", "fractions": "0 0.5 0.5 0.2 0.2\n"})
    cfg = compose("dataset=yolo", f"dataset.root={tmp_path}", "dataset.val_fraction=0").dataset
    loaded = load_dataset(cfg, ("train",))
    kinds = loaded.problems.by_kind()
    assert "box_outside_image" not in kinds, kinds
    [problem] = kinds["unnormalised_labels"]
    assert problem.file.endswith("pixels.txt")
    assert "coordinates up to 50" in problem.detail and "0-1 fractions" in problem.detail
    assert {r.path.stem: r.num_boxes for r in loaded.splits["train"]} == {"fractions": 1, "pixels": 0}


# item 9c: a training split without a single box is refused before training

def test_a_training_split_without_boxes_is_refused_in_one_line(tmp_path):
    from rcnn_cli.commands.train import train
    from rcnn_cli.settings.resolve import resolve

    (tmp_path / "img").mkdir()
    entries, boxes = [], []
    for i in range(4):
        Image.fromarray(np.zeros((40, 48, 3), np.uint8)).save(tmp_path / "img" / f"{i}.jpg")
        entries.append({"id": i + 1, "file_name": f"{i}.jpg", "width": 48, "height": 40})
        boxes.append({"id": i + 1, "image_id": i + 1, "category_id": 7, "bbox": [5, 5, 20, 20], "iscrowd": 0})
    (tmp_path / "a.json").write_text(json.dumps({"images": entries, "annotations": boxes,
                                                 "categories": [{"id": 1, "name": "cell"}]}))
    settings = resolve("train", ["dataset=coco", f"dataset.train_json={tmp_path}/a.json",
                                 f"dataset.train_images={tmp_path}/img", "dataset.val_fraction=0.25",
                                 f"run_dir={tmp_path}/run"])
    with pytest.raises(RcnnError) as caught:
        train(settings)
    message = str(caught.value)
    assert "\n" not in message and caught.value.exit_code == 2
    assert message.startswith("the training split has no boxes left") and "unknown_label x4" in message
    assert "rcnn data check" in message
    assert not (tmp_path / "run").exists()


# item 9d: temp files that a killed process left beside a target are removed by the next write

def test_the_next_write_removes_temp_files_of_dead_processes(tmp_path):
    from rcnn_cli.files import write_bytes

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        left = tmp_path / f".model.pid{dead.pid}.k2j4h6g8.tmp.onnx"          # as atomic_path names its temps
        busy = tmp_path / f".model.pid{alive.pid}.a1b2c3d4.tmp.onnx"
        pair = [tmp_path / f".net.pid{dead.pid}.z9y8x7w6.tmp{suffix}" for suffix in (".xml", ".bin")]
        mine = tmp_path / f".model.pid{os.getpid()}.q1w2e3r4.tmp.onnx"
        users = tmp_path / ".model.onnx.bak"
        for path in (left, busy, *pair, mine, users):
            path.write_bytes(b"x" * 1000)
        write_bytes(tmp_path / "model.onnx", b"new")
        assert (tmp_path / "model.onnx").read_bytes() == b"new"
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([busy.name, mine.name, users.name, "model.onnx"])
    finally:
        alive.kill()
        alive.wait()


def test_export_shows_a_weights_name_with_markup_as_text(tiny_run, tmp_path, monkeypatch):
    """The spinner's line (the file being written and checked) was handed to Rich as markup: a weights file
    named ``[red]run.ckpt`` showed as ``run.torchscript``. What the spinner shows is checked as Rich renders it."""
    import contextlib

    from rich.text import Text

    from rcnn_cli.commands import export

    shown = []
    monkeypatch.setattr(export.console, "status", lambda line, **_: shown.append(line) or contextlib.nullcontext())
    weights = tmp_path / "[red]run.ckpt"
    shutil.copy(tiny_run / "checkpoints" / "best.ckpt", weights)
    assert export.run(export.ExportOptions(weights, [".torchscript"])) == 0
    assert (tmp_path / "[red]run.torchscript").is_file()
    rendered = [line.plain if isinstance(line, Text) else Text.from_markup(line).plain for line in shown]
    assert rendered and all("[red]run.torchscript" in line for line in rendered), rendered
