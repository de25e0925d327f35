"""Training on tiles of huge pictures (issue 17, dataset.tile): the box rule at tile edges on a hand-built
picture, the tiles of test_tiling's 2560x1920 BCCD mosaic (every box in some tile, one decode per picture
and worker), the sampler's shards, and a short tiled training run with tiled validation."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY_TRAIN, compose
from PIL import Image
from test_tiling import bccd_root_module, mosaic  # noqa: F401  (module fixtures, shared)

from rcnn_cli.data.pipeline.sampler import GroupedBatchSampler
from rcnn_cli.data.pipeline.tiles import TileRecord, cut_boxes, source_positions, tile_records
from rcnn_cli.data.records import ImageRecord
from rcnn_cli.ops.windows import tile_windows


def record(width: int, height: int, boxes, labels=None, path="picture.jpg") -> ImageRecord:
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    labels = np.asarray(labels if labels is not None else [1] * len(boxes), np.int64)
    return ImageRecord(Path(path), width, height, boxes, labels, np.zeros(len(boxes), bool))


def test_a_cut_box_is_kept_clipped_at_60_percent_inside_and_dropped_at_30():
    # 1200x600 in 600 px tiles without overlap: windows (0, 0, 600, 600) and (600, 0, 1200, 600).
    straddling_60 = [540, 100, 640, 200]       # 60 of its 100 px width in the left tile, 40 in the right
    straddling_30 = [570, 300, 670, 400]       # 30 in the left tile, 70 in the right
    exactly_half = [550, 450, 650, 550]        # 50/50: "at least" 0.5 keeps it in both
    inside_right = [800, 100, 900, 200]
    picture = record(1200, 600, [straddling_60, straddling_30, exactly_half, inside_right], [1, 2, 3, 1])
    left, right = tile_records([picture], tile=600, overlap=0.0, min_visibility=0.5)
    assert (left.window, right.window) == ((0, 0, 600, 600), (600, 0, 1200, 600))
    assert (left.width, left.height, right.width, right.height) == (600, 600, 600, 600)
    assert left.boxes.tolist() == [[540, 100, 600, 200], [550, 450, 600, 550]] and left.labels.tolist() == [1, 3]
    assert right.boxes.tolist() == [[0, 300, 70, 400], [0, 450, 50, 550], [200, 100, 300, 200]]
    assert right.labels.tolist() == [2, 3, 1]
    # The same rule alone, at a stricter threshold: only boxes wholly inside stay.
    kept, keep = cut_boxes(picture.boxes, (0, 0, 600, 600), 1.0)
    assert keep.tolist() == [False, False, False, False] and kept.shape == (0, 4)


def test_the_grid_is_tiling_s_and_small_pictures_pass_whole():
    big, small = record(2560, 1920, [[10, 10, 50, 50]]), record(640, 480, [[0, 0, 10, 10]], path="small.jpg")
    items = tile_records([big, small], tile=640, overlap=0.2, min_visibility=0.5)
    assert [t.window for t in items[:-1]] == tile_windows(1920, 2560, 640, 0.2) and len(items) == 21
    assert items[-1] is small and source_positions(items) == [0] * 20 + [1]


def test_a_stated_share_of_empty_tiles_is_kept_the_same_everywhere():
    picture = record(3000, 600, [[10, 10, 50, 50]])               # 5 tiles of 600, 4 of them empty
    kept = tile_records([picture], 600, 0.0, 0.5, empty_share=0.5, seed=3)
    assert len(kept) == 1 + 2 and kept[0].num_boxes == 1
    assert [t.window for t in kept] == [t.window for t in tile_records([picture], 600, 0.0, 0.5, 0.5, seed=3)]
    assert len(tile_records([picture], 600, 0.0, 0.5, empty_share=0.0)) == 1


@pytest.fixture(scope="module")
def mosaic_set(mosaic, tmp_path_factory):  # noqa: F811
    """A COCO folder: train = the 2560x1920 mosaic + one 640x480 BCCD picture; val = the mosaic."""
    image, boxes, labels, names = mosaic
    root = tmp_path_factory.mktemp("mosaic-set")
    pixels = image.permute(1, 2, 0).numpy()
    Image.fromarray(pixels).save(root / "mosaic.png")
    Image.fromarray(pixels[:480, :640]).save(root / "small.png")           # the mosaic's first cell
    first_cell = (boxes[:, 2] <= 640) & (boxes[:, 3] <= 480)
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(names)]

    def annotations(image_id, chosen):
        return [{"id": image_id * 10000 + k, "image_id": image_id, "category_id": int(label), "iscrowd": 0,
                 "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])],
                 "area": float((b[2] - b[0]) * (b[3] - b[1]))}
                for k, (b, label) in enumerate(zip(boxes[chosen].tolist(), labels[chosen].tolist()))]

    everything = np.ones(len(boxes), bool)
    train = {"images": [{"id": 1, "file_name": "mosaic.png", "width": 2560, "height": 1920},
                        {"id": 2, "file_name": "small.png", "width": 640, "height": 480}],
             "annotations": annotations(1, everything) + annotations(2, first_cell.numpy()), "categories": categories}
    val = {**train, "images": train["images"][:1], "annotations": annotations(1, everything)}
    for split, data in (("train", train), ("val", val)):
        (root / f"{split}.json").write_text(json.dumps(data))
    return root


def mosaic_overrides(root: Path, tile: int = 640) -> list[str]:
    return ["dataset=coco", f"dataset.train_json={root}/train.json", f"dataset.train_images={root}",
            f"dataset.val_json={root}/val.json", f"dataset.val_images={root}", f"dataset.tile={tile}"]


def test_the_mosaic_makes_20_tiles_each_box_in_one_and_a_picture_is_decoded_once(mosaic_set, mosaic,  # noqa: F811
                                                                                   monkeypatch):
    from torchvision.ops import box_iou

    import rcnn_cli.data.pipeline.dataset as dataset_module
    from rcnn_cli.data.pipeline.datamodule import DetectionDataModule

    image, truth, labels, _ = mosaic
    cfg = compose(*TINY_TRAIN, *mosaic_overrides(mosaic_set), "augment=none", "dataset.batch_size=2")
    datamodule = DetectionDataModule(cfg)
    items = datamodule.train_items()
    tiles = [t for t in items if isinstance(t, TileRecord)]
    assert (len(tiles), len(items)) == (20, 21)                 # 5 x 4 windows of 640 at stride 512, plus small.png
    decodes = []
    real_read = dataset_module.read_rgb
    monkeypatch.setattr(dataset_module, "read_rgb", lambda *a: decodes.append(a[0]) or real_read(*a))
    seen = {label: [] for label in range(1, 4)}
    for images, targets in datamodule.train_dataloader():       # one epoch, in the sampler's order
        for pixels, target in zip(images, targets):
            tile = items[target["index"]]
            if isinstance(tile, TileRecord):
                x0, y0, x1, y1 = tile.window
                assert (pixels == image[:, y0:y1, x0:x1]).all()  # the crop is the mosaic's own pixels
                for box, label in zip(target["boxes"] + torch.tensor([x0, y0, x0, y0]), target["labels"]):
                    seen[int(label)].append(box)
    assert len(decodes) == 2                     # the mosaic once for all its 20 tiles, small.png once
    for label, boxes in seen.items():
        # Every true box is in some tile, whole or clipped to at least half its area (IoU >= 0.5).
        iou = box_iou(truth[labels == label], torch.stack(boxes))
        assert (iou.max(1).values >= 0.5 - 1e-6).all()


def test_tile_batches_shard_over_ranks_deterministically():
    picture = record(2560, 1920, [[10, 10, 50, 50]])
    items = tile_records([picture, record(640, 480, [], path="b.jpg"), picture], 640, 0.2, 0.5)
    sources, landscape = source_positions(items), [t.width >= t.height for t in items]

    def sampler(rank):
        s = GroupedBatchSampler(landscape, 4, shuffle=True, seed=1, rank=rank, world_size=2, sources=sources)
        s.set_epoch(2)
        return s

    first, second = sampler(0), sampler(1)
    assert first.expanded() == second.expanded() and sorted(first.expanded()) == list(range(41))
    order = [sources[i] for i in first.expanded()]
    assert sum(a != b for a, b in zip(order, order[1:])) == 2   # three pictures, each one run of its items
    assert len(list(first)) == len(list(second)) == math.ceil(41 / 4 / 2)


def test_a_short_tiled_training_run_logs_a_finite_loss_and_tiled_val_map(mosaic_set, tmp_path):
    from rcnn_cli.commands import train

    run_dir = tmp_path / "run"
    train.run(train.TrainOptions([*TINY_TRAIN, *mosaic_overrides(mosaic_set), "dataset.batch_size=2",
                                  "trainer.limit_train_batches=2", "trainer.log_every_n_steps=1",
                                  f"run_dir={run_dir}"]))
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    losses = [float(r["train/loss_step"]) for r in rows if r.get("train/loss_step")]
    maps = [float(r["val/map"]) for r in rows if r.get("val/map")]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    assert len(maps) == 1 and 0.0 <= maps[0] <= 1.0
    assert all(math.isfinite(float(r["val/loss"])) for r in rows if r.get("val/loss"))




def test_data_check_says_how_many_tiles_the_training_set_makes(mosaic_set, tmp_path, capsys):
    from rcnn_cli.commands import check

    check.run(check.CheckOptions(mosaic_overrides(mosaic_set), json_path=tmp_path / "check.json", show=1,
                                 augmented=True, out=tmp_path / "show"))
    tiles = json.loads((tmp_path / "check.json").read_text())["tiles"]
    assert tiles == {"tile": 640, "overlap": 0.2, "images": 2, "cut_images": 1, "tiles": 20, "empty_tiles": 0,
                     "items": 21}
    printed = " ".join(capsys.readouterr().out.split())
    assert "1 of 2 training images cut into 20 tiles" in printed
    assert json.loads((tmp_path / "check.json").read_text())["balance"]["unit"] == "tiles and whole pictures"
    assert "class imbalance (train): boxes" in printed and "; tiles and whole pictures " in printed
    assert Image.open(next((tmp_path / "show").glob("aug_*.png"))).size == (800, 800)    # a tile, resized


def test_eval_of_a_tile_trained_model_scores_in_its_tiles_unless_told_otherwise(monkeypatch, tmp_path):
    """A checkpoint trained with dataset.tile carries it in its stored config; rcnn eval used to score
    whole pictures unless --tile was typed again, so its AP differed from the val/map logged in training."""
    from rcnn_cli.commands import evaluate as command
    from rcnn_cli.settings.resolve import resolve

    seen = []

    def record(settings, datamodule, tile, overlap, predictor=None):
        seen.append((tile, overlap))
        raise RuntimeError("stop here")

    def whole(settings, datamodule):
        seen.append("whole pictures")
        raise RuntimeError("stop here")

    monkeypatch.setattr(command, "_score_with_predictor", record)
    monkeypatch.setattr(command, "_score_with_lightning", whole)
    for typed, expected in ((["dataset.tile=96", "dataset.tile_overlap=0.25"], (96, 0.25)), ([], "whole pictures")):
        with pytest.raises(RuntimeError):
            command.evaluate(resolve("eval", [*TINY_TRAIN, *typed]), tmp_path / "eval", tile=None)
        assert seen[-1] == expected
    with pytest.raises(RuntimeError):
        command.evaluate(resolve("eval", [*TINY_TRAIN, "dataset.tile=96"]), tmp_path / "eval", tile=64, overlap=0.1)
    assert seen[-1] == (64, 0.1)      # --tile typed wins
