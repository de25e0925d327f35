"""Issue 15, items 13 and 14: every input of ``rcnn predict`` gets its own drawn picture and VOC file
(video frames by frame index, same-name images from different folders by suffix), and ``--format coco``
is a COCO results file that pycocotools scores."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from rcnn_cli.data.sources import expand_sources
from rcnn_cli.predict.runner import PredictOptions, run
from rcnn_cli.predict.writers import write_outputs

CLASSES = ["cat", "dog"]
CATEGORY_IDS = [3, 7]           # the dataset's own ids, not positions
SIZE = (160, 48)                # width, height
# Each input is one grey level; the fake detector finds grey / 40 boxes in it, so every input has
# a different number of detections and a file written for the wrong input shows.
IMAGES = {"a/cell.jpg": 40, "b/cell.jpg": 80, "b/cell_2.png": 120}
FRAMES = [160, 200, 240]


def boxes_for(grey: float) -> list[tuple[list[float], int]]:
    """(xyxy box, label) of every object in an input of this grey level."""
    return [([10.0 + 20 * i, 5.0, 25.0 + 20 * i, 20.0], 1 + i % 2) for i in range(round(grey / 40))]


def fake_detect(images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    out = []
    for image in images:
        found = boxes_for(float(image.float().mean()))
        out.append({"boxes": torch.tensor([b for b, _ in found]).reshape(-1, 4),
                    "scores": torch.full((len(found),), 0.9), "labels": torch.tensor([lab for _, lab in found])})
    return out


@pytest.fixture
def predicted(tmp_path):
    import cv2

    inputs = tmp_path / "inputs"
    for name, grey in IMAGES.items():
        (inputs / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", SIZE, (grey,) * 3).save(inputs / name)
    writer = cv2.VideoWriter(str(inputs / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 5, SIZE)
    for grey in FRAMES:
        writer.write(np.full((SIZE[1], SIZE[0], 3), grey, np.uint8))
    writer.release()
    images, videos, problems = expand_sources([str(inputs)])
    assert not problems and len(images) == 3 and len(videos) == 1
    out = tmp_path / "out"
    result = run(fake_detect, CLASSES, images, videos, out, PredictOptions(conf=0.0, batch_size=2, num_workers=0))
    assert not result.failures
    write_outputs(result.results, out, ["json", "voc", "coco"], CATEGORY_IDS)
    return inputs, out, result.results


def expected_names(inputs: Path) -> dict[str, tuple[str, float]]:
    """input as results name it -> (output name, grey level)."""
    names = {str(inputs / "a/cell.jpg"): ("cell", 40), str(inputs / "b/cell.jpg"): ("cell_2", 80),
             str(inputs / "b/cell_2.png"): ("cell_2_2", 120)}   # cell_2 is taken by b/cell.jpg
    for index, grey in enumerate(FRAMES):
        names[f"{inputs / 'clip.avi'}#frame{index}"] = (f"clip_f{index:06d}", grey)
    return names


def test_every_input_has_its_own_voc_file_and_picture(predicted):
    inputs, out, results = predicted
    expected = expected_names(inputs)
    assert {r["image"]: r["output_name"] for r in results} == {k: v[0] for k, v in expected.items()}
    stems = sorted(v[0] for v in expected.values())
    assert sorted(p.stem for p in (out / "voc").glob("*.xml")) == stems
    assert sorted(p.stem for p in out.glob("*.jpg")) == stems
    for result in results:
        name, grey = expected[result["image"]]
        root = ET.parse(out / "voc" / f"{name}.xml").getroot()
        assert len(root.findall("object")) == len(result["detections"]) == len(boxes_for(grey))
        picture = np.asarray(Image.open(out / f"{name}.jpg").convert("L"), dtype=np.float64)
        assert abs(np.median(picture) - grey) < 6      # the picture of this input, not another's


def test_coco_format_is_a_results_file_pycocotools_scores(predicted, tmp_path):
    inputs, out, results = predicted
    image_map = json.loads((out / "predictions_coco_images.json").read_text())
    assert sorted(entry["file_name"] for entry in image_map) == sorted(r["image"] for r in results)
    # Ground truth built for the test from the image map: the objects each input holds.
    grey_of = {k: v[1] for k, v in expected_names(inputs).items()}
    annotations = []
    for entry in image_map:
        for box, label in boxes_for(grey_of[entry["file_name"]]):
            x1, y1, x2, y2 = box
            annotations.append({"id": len(annotations) + 1, "image_id": entry["id"], "iscrowd": 0,
                                "category_id": CATEGORY_IDS[label - 1], "bbox": [x1, y1, x2 - x1, y2 - y1],
                                "area": (x2 - x1) * (y2 - y1)})
    ground_truth = {"images": image_map, "annotations": annotations,
                    "categories": [{"id": i, "name": n} for i, n in zip(CATEGORY_IDS, CLASSES)]}
    (tmp_path / "gt.json").write_text(json.dumps(ground_truth))
    gt = COCO(str(tmp_path / "gt.json"))
    detections = gt.loadRes(str(out / "predictions_coco.json"))
    assert len(detections.anns) == len(annotations) == sum(len(r["detections"]) for r in results) == 21
    evaluator = COCOeval(gt, detections, "bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    # Every detection is its object, of the right category, in the right image: AP and AR are 1.
    assert evaluator.stats[0] == pytest.approx(1.0) and evaluator.stats[8] == pytest.approx(1.0)
