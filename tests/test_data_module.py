"""Augmentations keep boxes valid and aligned, batches never mix orientations and shard cleanly
across ranks, and the DataModule hands the detector what it expects on real images."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
from helpers import BCCD, FACEMASK, require_shared
from lightning.pytorch.accelerators import CPUAccelerator
from PIL import Image
from torch.utils.data import DataLoader

from rcnn_cli.data.images import ImageReadError
from rcnn_cli.data.pipeline.augment import build_augment
from rcnn_cli.data.pipeline.datamodule import DetectionDataModule, worker_count
from rcnn_cli.data.pipeline.dataset import DetectionDataset, collate, reseed_worker
from rcnn_cli.data.pipeline.sampler import GroupedBatchSampler
from rcnn_cli.data.records import ImageRecord, LoadedDataset
from rcnn_cli.settings.resolve import load_config


@pytest.mark.parametrize("preset", ["default", "strong"])
def test_augmentations_keep_boxes_inside_and_labels_aligned(preset):
    transform = build_augment(load_config([f"augment={preset}", "augment.seed=0"]).augment)
    rng = np.random.default_rng(0)
    for _ in range(200):
        height, width = (int(v) for v in rng.integers(60, 400, size=2))
        image = rng.integers(0, 255, size=(height, width, 3), dtype=np.uint8)
        xy = rng.uniform(0, [width - 10, height - 10], size=(6, 2))
        boxes = np.concatenate([xy, np.minimum(xy + rng.uniform(5, 80, size=(6, 2)), [width, height])], axis=1)
        labels = np.arange(1, 7)
        # Each box's label encodes its ignore flag, so a misaligned field shows up as a mismatch.
        out = transform(image=image, bboxes=boxes.astype(np.float32), labels=labels, ignore=labels % 2 == 0)
        h, w = out["image"].shape[:2]
        kept = np.asarray(out["bboxes"]).reshape(-1, 4)
        assert len(kept) == len(out["labels"]) == len(out["ignore"])
        assert (kept[:, :2] >= 0).all() and (kept[:, 2] <= w).all() and (kept[:, 3] <= h).all()
        assert (kept[:, 2] > kept[:, 0]).all() and (kept[:, 3] > kept[:, 1]).all()
        assert (np.asarray(out["ignore"]) == (np.asarray(out["labels"]) % 2 == 0)).all()


def test_horizontal_flip_moves_the_box_with_the_pixels():
    transform = build_augment(load_config(["augment=none", "augment.name=flip", "augment.hflip=1.0"]).augment)
    image = np.zeros((10, 20, 3), np.uint8)
    image[2:5, 1:4] = 255
    out = transform(image=image, bboxes=np.array([[1, 2, 4, 5]], np.float32), labels=[1], ignore=[False])
    x1, y1, x2, y2 = np.asarray(out["bboxes"])[0]
    assert (x1, x2) == pytest.approx((16, 19)) and out["image"][2:5, 16:19].min() == 255


def test_scale_jitter_changes_object_size_on_a_fixed_canvas():
    # The detector resizes every image to model.min_size, so only this changes apparent object size.
    transform = build_augment(load_config(["augment=none", "augment.name=zoom", "augment.scale=[0.5,0.5]",
                                           "augment.scale_p=1.0"]).augment)
    image = np.zeros((100, 120, 3), np.uint8)
    image[40:60, 40:60] = 255
    out = transform(image=image, bboxes=np.array([[40, 40, 60, 60]], np.float32), labels=[1], ignore=[False])
    assert out["image"].shape == (100, 120, 3)
    # Halved about the image centre (60, 50): the 20 px box becomes 10 px, and the pixels go with it.
    assert np.asarray(out["bboxes"])[0] == pytest.approx([50, 45, 60, 55], abs=0.5)
    rows, cols = np.nonzero(out["image"][..., 0] == 255)
    assert (cols.min(), cols.max() + 1, rows.min(), rows.max() + 1) == (50, 60, 45, 55)


def write_record(path: Path, size=(64, 48), boxes=((4, 4, 20, 20),), ignore=(False,)) -> ImageRecord:
    """A real image file (mid-grey, width x height = size) and its record."""
    Image.new("RGB", size, (128, 128, 128)).save(path)
    boxes = np.array(boxes, np.float32).reshape(-1, 4)
    return ImageRecord(path, size[0], size[1], boxes, np.arange(1, len(boxes) + 1, dtype=np.int64),
                       np.array(ignore, bool), path.stem)


def test_ignored_boxes_are_left_out_of_training_only(tmp_path):
    record = write_record(tmp_path / "a.png", boxes=[(1, 1, 9, 9), (10, 10, 30, 30), (2, 20, 12, 40)],
                          ignore=[False, True, False])
    image, train = DetectionDataset([record], train=True)[0]
    assert image.shape == (3, 48, 64) and image.dtype == torch.uint8
    assert train["labels"].tolist() == [1, 3] and not train["ignore"].any() and train["index"] == 0
    _, difficult = DetectionDataset([record], train=True, use_ignored=True)[0]
    assert difficult["labels"].tolist() == [1, 2, 3] and not difficult["ignore"].any()
    _, val = DetectionDataset([record])[0]
    assert val["labels"].tolist() == [1, 2, 3] and val["ignore"].tolist() == [False, True, False]
    assert val["boxes"].dtype == torch.float32 and val["boxes"][1].tolist() == [10, 10, 30, 30]


@pytest.mark.parametrize("workers", [0, 2])
def test_an_image_that_breaks_after_indexing_is_named_by_the_worker(tmp_path, workers):
    good = write_record(tmp_path / "good.png")
    broken = write_record(tmp_path / "broken.jpg")
    broken.path.write_bytes(broken.path.read_bytes()[:40])          # truncated after indexing
    loader = DataLoader(DetectionDataset([good, broken]), batch_size=1, collate_fn=collate, num_workers=workers)
    # torch re-raises a worker's error as RuntimeError when the type needs more than a message.
    with pytest.raises((ImageReadError, RuntimeError), match="broken.jpg"):
        list(loader)


def test_each_worker_draws_its_own_augmentations(tmp_path):
    record = write_record(tmp_path / "a.png")
    image = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(image).save(record.path)
    augment = build_augment(load_config(["augment=none", "augment.name=jitter", "augment.color_jitter=0.4",
                                         "augment.hflip=0.5"]).augment)
    dataset = DetectionDataset([record] * 4, augment, train=True)
    torch.manual_seed(0)
    loader = DataLoader(dataset, batch_size=1, collate_fn=collate, num_workers=2, worker_init_fn=reseed_worker)
    first, second = [images[0] for images, _ in list(loader)[:2]]     # item 0 from worker 0, item 1 from worker 1
    assert not torch.equal(first, second)       # forked workers would share one random state


def test_auto_workers_leave_a_core_for_training():
    assert worker_count("auto", cpus=16) == 4 and worker_count("auto", cpus=3) == 2
    assert worker_count("auto", cpus=2) == 0 and worker_count(3) == 3


def test_batches_never_mix_orientations_and_cover_everything():
    landscape = [bool(x) for x in np.random.default_rng(1).integers(0, 2, size=103)]
    sampler = GroupedBatchSampler(landscape, batch_size=4, shuffle=True, seed=0)
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert all(len({landscape[i] for i in batch}) == 1 for batch in batches)
        assert sorted(i for batch in batches for i in batch) == list(range(103))
    sampler.set_epoch(0)
    first = list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != first            # reshuffled per epoch


def test_ranks_get_disjoint_shards():
    landscape = [i % 3 == 0 for i in range(50)]
    train = [list(GroupedBatchSampler(landscape, 4, shuffle=True, rank=r, world_size=2)) for r in (0, 1)]
    assert len(train[0]) == len(train[1])            # DDP needs the same number of steps
    evaluation = [list(GroupedBatchSampler(landscape, 4, shuffle=False, rank=r, world_size=2, pad=False))
                  for r in (0, 1)]
    seen = [i for shard in evaluation for batch in shard for i in batch]
    assert sorted(seen) == list(range(50))           # every image exactly once
    trained = {i for shard in train for batch in shard for i in batch}
    assert trained == set(range(50))                  # both ranks shuffle alike, so together they see all
    assert all(len({landscape[i] for i in batch}) == 1 for shard in train for batch in shard)


def test_datamodule_shards_by_the_trainers_rank(tmp_path):
    records = [write_record(tmp_path / f"{i}.png", size=(64, 48) if i % 3 else (48, 64)) for i in range(11)]
    cfg = load_config(["dataset.batch_size=2", "dataset.num_workers=0", "seed=3"])
    shards = []
    for rank in (0, 1):
        module = DetectionDataModule(cfg)
        module.loaded = LoadedDataset(["thing"], {"train": records, "val": records[:7]})
        module.trainer = SimpleNamespace(global_rank=rank, world_size=2, accelerator=CPUAccelerator())
        shards.append((list(module.train_dataloader().batch_sampler), list(module.val_dataloader().batch_sampler)))
    (train0, val0), (train1, val1) = shards
    assert len(train0) == len(train1) == 3                       # 6 orientation-pure batches dealt out
    assert sorted(i for batch in val0 + val1 for i in batch) == list(range(7))
    assert not {i for b in val0 for i in b} & {i for b in val1 for i in b}


class IndexRecorder(L.LightningModule):
    """Trains nothing; remembers which record indices each epoch's batches held."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.seen: dict[int, list[int]] = {}

    def training_step(self, batch, batch_index):
        _, targets = batch
        self.seen.setdefault(self.current_epoch, []).extend(t["index"] for t in targets)
        return self.weight.sum() * 0

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_lightning_reshuffles_every_epoch(tmp_path):
    # Lightning calls set_epoch on loader.batch_sampler.sampler, not on the batch sampler itself.
    records = [write_record(tmp_path / f"{i}.png", size=(16, 12) if i % 2 else (12, 16)) for i in range(24)]
    module = DetectionDataModule(load_config(["dataset.batch_size=2", "dataset.num_workers=0", "augment=none"]))
    module.loaded = LoadedDataset(["thing"], {"train": records, "val": []})
    recorder = IndexRecorder()
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, use_distributed_sampler=False,
                        limit_val_batches=0, default_root_dir=tmp_path)
    trainer.fit(recorder, datamodule=module)
    first, second = recorder.seen[0], recorder.seen[1]
    assert sorted(first) == sorted(second) == list(range(24))
    assert first != second


@pytest.mark.parametrize("dataset,root", [("bccd", BCCD), ("facemask", FACEMASK)])
@pytest.mark.parametrize("workers", [0, 2])
def test_loaders_yield_uint8_images_and_aligned_targets(dataset, root, workers):
    require_shared()
    cfg = load_config([f"dataset={dataset}", f"dataset.root={root}", "dataset.batch_size=3",
                       f"dataset.num_workers={workers}"])
    module = DetectionDataModule(cfg)
    images, targets = next(iter(module.train_dataloader()))
    assert len(images) == 3 and all(i.dtype == torch.uint8 and i.shape[0] == 3 for i in images)
    for image, target in zip(images, targets):
        assert target["boxes"].shape == (len(target["labels"]), 4) and target["boxes"].dtype == torch.float32
        assert (target["boxes"][:, 2] <= image.shape[2]).all() and (target["boxes"][:, 3] <= image.shape[1]).all()
        assert not target["ignore"].any()            # nothing ignored is trained on
    images, targets = next(iter(module.val_dataloader()))
    record = module.records("val")[targets[0]["index"]]
    assert len(targets[0]["labels"]) == record.num_boxes   # validation sees every box, unaugmented
