"""Pseudo-labels (issue 19): predictions written as VOC, COCO and YOLO read back with our own loaders
give the same boxes, and the YOLO folder trains as it is."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import compose, tiny_images

from rcnn_cli.commands import predict
from rcnn_cli.data.readers.load import load_dataset


@pytest.fixture(scope="module")
def predicted(tiny_run, tmp_path_factory):
    """The tiny model's predictions on 6 shapes images, in every format, low threshold for many boxes."""
    out = tmp_path_factory.mktemp("pseudo") / "p"
    images = tiny_images(6)
    predict.run(predict.PredictOptions([str(p) for p in images], tiny_run / "checkpoints" / "best.ckpt",
                                       ["model.precision=fp32", "device=cpu"], out=out,
                                       formats=["json,voc,coco,yolo"], conf="0.05", draw=False))
    results = json.loads((out / "predictions.json").read_text())
    assert sum(len(r["detections"]) for r in results) > 0
    return out, results, images


def boxes_by_image(loaded, split: str = "train") -> dict[str, np.ndarray]:
    return {Path(r.path).stem: r.boxes for r in loaded.splits[split]}


def expected(results) -> dict[str, tuple[np.ndarray, list[str]]]:
    return {Path(r["image"]).stem: (np.array([d["box"] for d in r["detections"]], np.float32).reshape(-1, 4),
                                    [d["label"] for d in r["detections"]]) for r in results}


def test_voc_files_read_back_with_the_same_boxes(predicted):
    out, results, images = predicted
    cfg = compose("dataset=voc", f"dataset.images={images[0].parent}", f"dataset.annotations={out / 'voc'}",
                  "dataset.val_fraction=0", "dataset.class_names=[circle,square,triangle]").dataset
    loaded = boxes_by_image(load_dataset(cfg, ("train",)))
    for stem, (boxes, _) in expected(results).items():
        assert np.abs(loaded[stem] - boxes).max(initial=0) <= 0.5 + 1e-4        # VOC stores whole pixels


def test_coco_results_read_back_as_a_coco_file_with_the_same_boxes(predicted, tmp_path):
    out, results, images = predicted
    detections = json.loads((out / "predictions_coco.json").read_text())
    entries = json.loads((out / "predictions_coco_images.json").read_text())
    assert [e["file_name"] for e in entries] == [r["image"] for r in results]
    entries = [{**e, "file_name": Path(e["file_name"]).name} for e in entries]      # relative to the folder
    ground_truth = {"images": entries,
                    "annotations": [{**d, "id": i, "iscrowd": 0, "area": d["bbox"][2] * d["bbox"][3]}
                                    for i, d in enumerate(detections, start=1)],
                    "categories": [{"id": i, "name": n}
                                   for i, n in enumerate(["circle", "square", "triangle"], start=1)]}
    (tmp_path / "gt.json").write_text(json.dumps(ground_truth))
    cfg = compose("dataset=coco", f"dataset.train_json={tmp_path / 'gt.json'}",
                  f"dataset.train_images={images[0].parent}", "dataset.val_fraction=0").dataset
    loaded = boxes_by_image(load_dataset(cfg, ("train",)))
    for stem, (boxes, _) in expected(results).items():
        assert np.abs(np.sort(loaded[stem], axis=0) - np.sort(boxes, axis=0)).max(initial=0) < 0.02


def test_the_yolo_folder_reads_back_and_trains_as_it_is(predicted):
    out, results, _ = predicted
    cfg = compose("dataset=yolo", f"dataset.root={out / 'yolo'}", "dataset.val_fraction=0").dataset
    loaded = load_dataset(cfg, ("train",))
    assert loaded.class_names == ["circle", "square", "triangle"]
    by_image = {Path(r.path).stem: r for r in loaded.splits["train"]}
    for stem, (boxes, labels) in expected(results).items():
        record = by_image[stem]
        assert np.abs(record.boxes - boxes).max(initial=0) < 0.01
        assert [loaded.class_names[i - 1] for i in record.labels] == labels
