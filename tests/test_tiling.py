"""Tiled inference (issue 17): a 2560x1920 mosaic of 16 full-size BCCD pictures. A detector that, like a
real one, misses objects that end up small after the model's resize finds more of the small ones when
tiled, and no object is reported twice across tile seams."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import compose
from PIL import Image
from torchvision.ops import box_iou

from rcnn_cli.data.readers.load import load_dataset
from rcnn_cli.inference.tiling import detect_tiled
from rcnn_cli.ops.windows import tile_windows

MIN_SIZE, MAX_SIZE, SMALLEST_SEEN = 800, 1333, 16.0     # the model's resize, and what it can still see (px)


@pytest.fixture(scope="module")
def mosaic(bccd_root_module):
    """(3, 1920, 2560) uint8 mosaic and its boxes / labels, from 16 BCCD training pictures at full size."""
    loaded = load_dataset(compose("dataset=bccd").dataset, ("train",))
    records = [r for r in loaded.splits["train"] if (r.width, r.height) == (640, 480)][:16]
    canvas = np.zeros((1920, 2560, 3), np.uint8)
    boxes, labels = [], []
    for index, record in enumerate(records):
        x, y = (index % 4) * 640, (index // 4) * 480
        canvas[y:y + 480, x:x + 640] = np.asarray(Image.open(record.path).convert("RGB"))
        boxes.append(record.boxes + np.array([x, y, x, y], np.float32))
        labels.append(record.labels)
    return torch.from_numpy(canvas).permute(2, 0, 1).contiguous(), torch.from_numpy(np.concatenate(boxes)), \
        torch.from_numpy(np.concatenate(labels)), loaded.class_names


@pytest.fixture(scope="module")
def bccd_root_module():
    from helpers import require_shared

    return require_shared()


def oracle(truth: torch.Tensor, labels: torch.Tensor):
    """Finds the true boxes inside the picture it is given (a view into the mosaic tells where it is),
    clipped to it as a cut object would be, but only those at least SMALLEST_SEEN px on their short side
    after the resize a model applies (min_size 800, max_size 1333)."""
    def detect(images):
        out = []
        for image in images:
            full_width = image.stride(1)
            y0, x0 = divmod(image.storage_offset(), full_width)
            height, width = image.shape[-2:]
            scale = min(MIN_SIZE / min(height, width), MAX_SIZE / max(height, width))
            local = truth - torch.tensor([x0, y0, x0, y0], dtype=truth.dtype)
            clipped = torch.stack([local[:, 0].clamp(0, width), local[:, 1].clamp(0, height),
                                   local[:, 2].clamp(0, width), local[:, 3].clamp(0, height)], 1)
            sides = torch.minimum(clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]) * scale
            seen = sides >= SMALLEST_SEEN
            whole = (clipped == local).all(1)
            out.append({"boxes": clipped[seen], "labels": labels[seen],
                        "scores": torch.where(whole[seen], 0.9, 0.6)})
        return out
    return detect


def recall(found: dict, truth: torch.Tensor, labels: torch.Tensor, label: int) -> float:
    mine = labels == label
    iou = box_iou(truth[mine], found["boxes"][found["labels"] == label])
    return float((iou.max(1).values >= 0.5).float().mean()) if iou.numel() else 0.0


def test_tiles_find_the_small_cells_the_whole_picture_misses_and_report_each_once(mosaic):
    image, truth, labels, names = mosaic
    detect = oracle(truth, labels)
    whole = detect([image])[0]
    tiled = detect_tiled(detect, image, tile=640, overlap=0.2, batch_size=4)
    platelets = names.index("Platelets") + 1
    assert recall(whole, truth, labels, platelets) < 0.2 < 0.95 <= recall(tiled, truth, labels, platelets)
    for label in range(1, len(names) + 1):
        # Every detection pairs with its own cell (one-to-one at IoU >= 0.5): no cell reported twice,
        # no stray half-cell at a seam. (Overlapping cells of a cluster are distinct cells.)
        iou = box_iou(tiled["boxes"][tiled["labels"] == label], truth[labels == label])
        taken = torch.zeros(iou.shape[1], dtype=torch.bool)
        for row in iou:
            candidates = (row >= 0.5) & ~taken
            assert candidates.any()
            taken[torch.where(candidates, row, torch.tensor(-1.0)).argmax()] = True


def test_windows_cover_the_picture_with_the_stated_overlap():
    windows = tile_windows(1920, 2560, 640, 0.2)
    xs = sorted({w[0] for w in windows})
    assert xs[:3] == [0, 512, 1024] and xs[-1] == 2560 - 640 and all(w[2] - w[0] == 640 for w in windows)
    covered = np.zeros((1920, 2560), bool)
    for x0, y0, x1, y1 in windows:
        covered[y0:y1, x0:x1] = True
    assert covered.all() and tile_windows(300, 400, 640, 0.2) == [(0, 0, 400, 300)]
    with pytest.raises(ValueError, match="--overlap 1.0"):
        tile_windows(100, 100, 50, 1.0)


def test_rcnn_predict_tiles_a_huge_picture_end_to_end(mosaic, tiny_run, tmp_path):
    import json

    from rcnn_cli.commands import predict

    Image.fromarray(mosaic[0].permute(1, 2, 0).numpy()).save(tmp_path / "mosaic.jpg")
    code = predict.run(predict.PredictOptions([str(tmp_path / "mosaic.jpg")], tiny_run / "checkpoints" / "best.ckpt",
                                              ["device=cpu"], out=tmp_path / "p", conf="0.05", tile=640,
                                              draw=False))
    result = json.loads((tmp_path / "p" / "predictions.json").read_text())[0]
    assert code == 0 and (result["width"], result["height"]) == (2560, 1920)
    assert all(0 <= d["box"][0] <= d["box"][2] <= 2560 and 0 <= d["box"][1] <= d["box"][3] <= 1920
               for d in result["detections"])


def test_eval_tile_scores_like_predict_tile_and_equals_plain_eval_when_one_tile_covers(tiny_run, tmp_path):
    import json

    from rcnn_cli.commands import evaluate

    weights = tiny_run / "checkpoints" / "best.ckpt"
    common = ["trainer.accelerator=cpu", "model.precision=fp32"]
    for name, tile in (("plain", None), ("tiled", 128)):          # the tiny set's pictures are 128 px: one tile
        evaluate.run(evaluate.EvalOptions(weights, common, out=tmp_path / name, json_path=tmp_path / f"{name}.json",
                                          tile=tile))
    plain, tiled = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("plain", "tiled"))
    assert plain["map"] == pytest.approx(tiled["map"], abs=1e-6) and plain["voc_map50"] == tiled["voc_map50"]
    assert (tmp_path / "tiled" / "report.html").is_file()


def test_more_than_100_detections_per_picture_end_to_end(mosaic, tiny_run, tmp_path):
    """Crowded scenes: box_detections_per_img above 100 holds in the model, predict, export and eval."""
    import json

    from rcnn_cli import Detector
    from rcnn_cli.commands import export, predict
    from rcnn_cli.inference.exported import load_exported

    weights = tiny_run / "checkpoints" / "best.ckpt"
    crowded = {"box_detections_per_img": 250, "box_score_thresh": 0.0, "rpn_post_nms_top_n_test": 300}
    detector = Detector.load(weights, precision="fp32", device="cpu", **crowded)
    assert len(detector.predict(mosaic[0])["boxes"]) == 250
    overrides = [f"model.{k}={v}" for k, v in crowded.items()]
    Image.fromarray(mosaic[0].permute(1, 2, 0).numpy()).save(tmp_path / "mosaic.png")
    predict.run(predict.PredictOptions([str(tmp_path / "mosaic.png")], weights, [*overrides, "device=cpu",
                                        "model.precision=fp32"], out=tmp_path / "p", conf="0", draw=False))
    assert len(json.loads((tmp_path / "p" / "predictions.json").read_text())[0]["detections"]) == 250
    assert export.run(export.ExportOptions(weights, [".onnx"], overrides, out=tmp_path / "crowded.onnx",
                                           images=[str(tmp_path / "mosaic.png")])) == 0
    assert len(load_exported(tmp_path / "crowded.onnx").detect([mosaic[0]])[0]["boxes"]) == 250
