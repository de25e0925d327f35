"""`rcnn predict` on real pictures: every output format parses and tells the same story, pictures
are drawn, and a corrupt file or a non-image is reported and skipped while the rest run."""

from __future__ import annotations

import csv
import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from helpers import bccd_images, facemask_images, image_folder, run_rcnn
from PIL import Image


@pytest.fixture(scope="module")
def predicted(tiny_run, tmp_path_factory):
    inputs = tmp_path_factory.mktemp("inputs")
    for image in bccd_images(2) + facemask_images(2):
        shutil.copy(image, inputs / image.name)
    (inputs / "corrupt.jpg").write_bytes((inputs / bccd_images(1)[0].name).read_bytes()[:500])
    (inputs / "notes.png").write_text("this is not a picture")
    out = tmp_path_factory.mktemp("out")
    result = run_rcnn("predict", str(inputs), "--weights", str(tiny_run / "checkpoints" / "best.ckpt"),
                      "--out", str(out), "--conf", "0.0", "--format", "json", "--format", "csv",
                      "--format", "coco", "--format", "voc", cwd=tiny_run.parent.parent)
    return inputs, out, result


def test_bad_files_are_reported_and_the_rest_still_run(predicted):
    _, out, result = predicted
    assert result.returncode == 1, result.stderr[-2000:]
    assert "corrupt.jpg" in result.stderr and "notes.png" in result.stderr
    results = json.loads((out / "predictions.json").read_text())
    assert len(results) == 4


def test_all_formats_agree(predicted):
    _, out, _ = predicted
    results = json.loads((out / "predictions.json").read_text())
    total = sum(len(r["detections"]) for r in results)
    assert total > 0     # threshold 0: an untrained-ish model still proposes boxes
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert len(rows) == total
    first = next(r for r in results if r["detections"])
    row = next(r for r in rows if r["image"] == first["image"])
    assert [float(row[k]) for k in ("x1", "y1", "x2", "y2")] == first["detections"][0]["box"]
    coco = json.loads((out / "predictions_coco.json").read_text())
    images = json.loads((out / "predictions_coco_images.json").read_text())
    assert len(coco) == total and len(images) == 4
    x, y, w, h = coco[0]["bbox"]
    file_name = {entry["id"]: entry["file_name"] for entry in images}[coco[0]["image_id"]]
    box = next(r for r in results if r["image"] == file_name)["detections"][0]["box"]
    assert [x, y, x + w, y + h] == pytest.approx(box, abs=0.02)
    for result in results:
        root = ET.parse(out / "voc" / f"{result['output_name']}.xml").getroot()
        assert len(root.findall("object")) == len(result["detections"])
        assert int(root.findtext("size/width")) == result["width"]


def test_pictures_are_drawn_on_the_inputs(predicted):
    inputs, out, _ = predicted
    for image in bccd_images(2) + facemask_images(2):
        drawn = out / (image.stem + ".jpg")
        assert drawn.is_file()
        before = np.asarray(Image.open(image).convert("RGB"), dtype=np.int16)
        after = np.asarray(Image.open(drawn).convert("RGB"), dtype=np.int16)
        assert before.shape == after.shape and np.abs(before - after).max() > 100


def test_a_wrong_format_or_threshold_is_one_line_exit_2(tiny_run, tmp_path):
    weights = str(tiny_run / "checkpoints" / "best.ckpt")
    shutil.copy(bccd_images(1)[0], tmp_path / "a.jpg")
    for args in (["--format", "xml"], ["--conf", "banana"], ["--classes", "cat"]):
        result = run_rcnn("predict", str(tmp_path), "--weights", weights, *args, cwd=tmp_path)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.strip().count("\n") == 0
    assert "not classes of this model" in result.stderr


def test_predict_takes_its_pixel_limit_and_workers_from_the_dataset_settings(tiny_run, tmp_path, monkeypatch,
                                                                              capsys):
    """The refusal of an oversized picture names dataset.max_image_pixels, so predict must honour it (it
    used the shipped default whatever was typed), and decode with dataset.num_workers (it used auto)."""
    from helpers import tiny_images

    from rcnn_cli.commands import predict
    from rcnn_cli.predict import runner

    inputs = image_folder(tmp_path / "in", tiny_images(2))                       # 128 x 128: 16,384 pixels
    Image.new("RGB", (200, 150), "white").save(inputs / "big.png")               # 30,000 pixels
    workers = []
    real_loader = runner.DataLoader

    def recording_loader(*args, **kwargs):
        workers.append(kwargs["num_workers"])
        return real_loader(*args, **kwargs)

    monkeypatch.setattr(runner, "DataLoader", recording_loader)
    out = tmp_path / "out"
    code = predict.run(predict.PredictOptions(
        [str(inputs)], tiny_run / "checkpoints" / "best.ckpt", out=out, draw=False, conf="0.05",
        overrides=["dataset.max_image_pixels=20000", "dataset.num_workers=1", "device=cpu", "model.precision=fp32"]))
    assert code == 1                                                               # one input skipped
    assert "big.png: 200x150 is 30,000 pixels, over dataset.max_image_pixels=20,000" in capsys.readouterr().err
    listed = [Path(r["image"]).name for r in json.loads((out / "predictions.json").read_text())]
    assert sorted(listed) == sorted(p.name for p in tiny_images(2))
    assert workers == [1]


@pytest.mark.parametrize("thresholds, message", [
    ({"circle": 0.3, "square": 0.3}, "no threshold for triangle"),
    ({}, "holds no thresholds; must be {class name: score in [0, 1]}"),      # refused before the model loads
    ({"circle": 0.3, "square": 0.3, "triangel": 0.3}, "no threshold for triangle; the file names triangel, "
                                                        "which is not a class of this model: did you mean triangle?"),
])
def test_a_thresholds_file_missing_a_class_is_refused_in_one_line(tiny_run, tmp_path, thresholds, message):
    """A class missing from thresholds.json got threshold 1.01: all its detections dropped without a word."""
    from helpers import tiny_images

    from rcnn_cli.commands import predict
    from rcnn_cli.errors import UsageError

    (tmp_path / "thresholds.json").write_text(json.dumps(thresholds))
    options = predict.PredictOptions([str(tiny_images(1)[0])], tiny_run / "checkpoints" / "best.ckpt",
                                     out=tmp_path / "out", conf=str(tmp_path / "thresholds.json"), draw=False)
    with pytest.raises(UsageError) as caught:
        predict.run(options)
    assert str(caught.value).startswith(f"--conf {tmp_path / 'thresholds.json'}: {message}")
    assert "\n" not in str(caught.value) and not (tmp_path / "out").exists()


def test_per_class_thresholds_keep_each_class_above_its_own(tiny_run, tmp_path):
    from helpers import tiny_images

    weights, images = str(tiny_run / "checkpoints" / "best.ckpt"), [str(p) for p in tiny_images(4)]
    every = run_rcnn("predict", *images, "--weights", weights, "--out", str(tmp_path / "all"), "--conf", "0.05",
                     "--no-draw", "--precision", "fp32", cwd=tmp_path)
    assert every.returncode == 0, every.stderr[-2000:]
    found = [d for r in json.loads((tmp_path / "all" / "predictions.json").read_text()) for d in r["detections"]]
    per_class = {"circle": 0.05, "square": 1.0, "triangle": 0.1}
    (tmp_path / "t.json").write_text(json.dumps(per_class))
    some = run_rcnn("predict", *images, "--weights", weights, "--out", str(tmp_path / "some"), "--conf",
                    str(tmp_path / "t.json"), "--no-draw", "--precision", "fp32", cwd=tmp_path)
    assert some.returncode == 0, some.stderr[-2000:]
    kept = [d for r in json.loads((tmp_path / "some" / "predictions.json").read_text()) for d in r["detections"]]
    expected = [d for d in found if d["score"] >= per_class[d["label"]]]
    assert {d["label"] for d in expected} == {"circle", "triangle"} and kept == expected
