"""Repeat-factor sampling (dataset.repeat_factor_thresh) on BCCD's training split: the LVIS factors,
one epoch's expanded list (deterministic per seed and epoch), aspect-ratio batches and DDP shards."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import replace
from types import SimpleNamespace

import pytest
from helpers import BCCD, require_shared
from lightning.pytorch.accelerators import CPUAccelerator

from rcnn_cli.data.inspection.check import class_balance
from rcnn_cli.data.pipeline.datamodule import DetectionDataModule
from rcnn_cli.data.pipeline.repeat import repeat_factors
from rcnn_cli.data.pipeline.sampler import GroupedBatchSampler
from rcnn_cli.data.readers.load import load_dataset
from rcnn_cli.settings.resolve import load_config


@pytest.fixture(scope="module")
def bccd_train():
    require_shared()
    loaded = load_dataset(load_config(["dataset=bccd", f"dataset.root={BCCD}"]).dataset, ("train", "val"))
    return loaded


def test_factors_follow_the_lvis_rule(bccd_train):
    records = bccd_train.splits["train"]
    assert bccd_train.class_names == ["Platelets", "RBC", "WBC"]
    n = len(records)
    with_class = [sum(1 for r in records if c in r.labels) for c in (1, 2, 3)]
    assert (n, with_class) == (205, [117, 197, 204])           # RBC and WBC in nearly every image
    factors = repeat_factors(records, 1.0, 3)
    expected = [max(1.0, math.sqrt(1.0 / (k / n))) for k in with_class]
    assert factors.per_class.tolist() == expected
    assert [round(r, 4) for r in expected] == [1.3237, 1.0201, 1.0024]
    # An image repeats as its rarest class: Platelets, else RBC, else WBC.
    assert factors.per_image.tolist() == [expected[0] if 1 in r.labels else expected[1] if 2 in r.labels
                                          else expected[2] for r in records]
    kinds = Counter(1 if 1 in r.labels else 2 if 2 in r.labels else 3 for r in records)
    assert kinds == {1: 117, 2: 86, 3: 2}
    epoch = 117 * expected[0] + 86 * expected[1] + 2 * expected[2]
    assert factors.epoch_images == pytest.approx(epoch, rel=1e-12) and round(epoch, 2) == 244.6
    # Every class is in more than 30% of the images: t = 0.3 repeats nothing.
    assert set(repeat_factors(records, 0.3, 3).per_image.tolist()) == {1.0}


def test_epochs_are_seeded_grouped_and_shard_evenly(bccd_train):
    records = bccd_train.splits["train"]
    repeat = repeat_factors(records, 1.0, 3).per_image
    landscape = [i % 7 != 0 for i in range(len(records))]     # BCCD is all 640x480: make every 7th portrait

    def sampler(rank=0, world=1, epoch=0, batch=4):
        s = GroupedBatchSampler(landscape, batch, shuffle=True, seed=0, rank=rank, world_size=world, repeat=repeat)
        s.set_epoch(epoch)
        return s

    lists = [sampler(epoch=e).expanded() for e in range(4)]
    assert [len(x) for x in lists] == [237, 244, 244, 246]                # drawn: 205 + frac(r_i) coin flips
    for drawn in lists:                                                    # once or twice each (1 <= r_i < 2)
        assert set(drawn) == set(range(205)) and max(Counter(drawn).values()) == 2
    assert sampler(epoch=1).expanded() == lists[1] and lists[1] != lists[2]
    # Platelet images (r 1.32) come back ~32% of the time, WBC-only ones (r 1.002) almost never.
    twice = Counter(i for drawn in lists for i, k in Counter(drawn).items() if k == 2)
    platelets = {i for i, r in enumerate(records) if 1 in r.labels}
    assert sum(twice[i] for i in platelets) == 144 and sum(v for i, v in twice.items() if i not in platelets) == 7
    # A fixed epoch length (Lightning counts it once): per orientation round(sum r_i) images in batches of 4.
    portrait = round(sum(r for r, land in zip(repeat, landscape) if not land))
    landscape_images = round(sum(r for r, land in zip(repeat, landscape) if land))
    assert (portrait, landscape_images) == (35, 209)
    assert [len(list(sampler(epoch=e))) for e in range(4)] == [9 + 53] * 4
    assert all(len({landscape[i] for i in b}) == 1 for e in range(4) for b in sampler(epoch=e))
    # Ranks: the same expanded list, the same number of batches, and together the epoch's batches, each
    # once, plus padding batches (the first ones) up to a multiple of the world size.
    ranks = [sampler(rank=r, world=2, epoch=3, batch=5) for r in (0, 1)]
    assert ranks[0].expanded() == ranks[1].expanded()
    everything = ranks[0]._all_batches()
    assert len(everything) == math.ceil(35 / 5) + math.ceil(209 / 5) == 49
    shards = [list(s) for s in ranks]
    assert len(shards[0]) == len(shards[1]) == 25
    assert shards[0] == everything[0::2] and shards[1] == everything[1::2] + [everything[0]]
    ranks3 = [sampler(rank=r, world=3, epoch=3, batch=5) for r in (0, 1, 2)]
    shards3 = [list(s) for s in ranks3]
    assert [len(s) for s in shards3] == [17, 17, 17]
    before_padding = [b for r, shard in enumerate(shards3) for k, b in enumerate(shard) if r + 3 * k < 49]
    assert sorted(map(tuple, before_padding)) == sorted(map(tuple, everything))        # disjoint, all covered
    assert (shards3[1][-1], shards3[2][-1]) == (everything[0], everything[1])            # the padding batches


def test_only_training_repeats_and_the_datamodule_passes_the_factors(bccd_train):
    cfg = load_config(["dataset=bccd", f"dataset.root={BCCD}", "dataset.repeat_factor_thresh=1.0",
                       "dataset.num_workers=0", "dataset.batch_size=4"])
    module = DetectionDataModule(cfg)
    module.loaded = bccd_train
    module.trainer = SimpleNamespace(global_rank=0, world_size=1, accelerator=CPUAccelerator())
    train, val = module.train_dataloader().batch_sampler, module.val_dataloader().batch_sampler
    assert train.repeat == repeat_factors(bccd_train.splits["train"], 1.0, 3).per_image.tolist()
    assert len(train) == math.ceil(245 / 4) and val.repeat is None and len(val) == math.ceil(87 / 4)
    off = DetectionDataModule(load_config(["dataset=bccd", f"dataset.root={BCCD}", "dataset.num_workers=0"]))
    off.loaded = bccd_train
    assert off.train_dataloader().batch_sampler.repeat is None


def test_data_check_reports_the_imbalance_and_what_the_setting_would_do(bccd_train):
    records = bccd_train.splits["train"]
    balance = class_balance(records, bccd_train.class_names)
    assert balance["boxes"] == {"Platelets": 209, "RBC": 2381, "WBC": 214}
    assert balance["images"] == {"Platelets": 117, "RBC": 197, "WBC": 204}
    ratios = (balance["box_ratio"], balance["image_ratio"])
    assert ratios == (round(2381 / 209, 2), round(204 / 117, 2)) == (11.39, 1.74)
    # Platelets are in 57% of the images: t = 1 (the largest offered) is the first with 4 f_c <= t.
    assert balance["suggestion"] == {"setting": "dataset.repeat_factor_thresh=1", "thresh": 1.0,
                                     "epoch_images": 244.6, "train_images": 205, "rarest": "Platelets",
                                     "rarest_repeat": round(math.sqrt(205 / 117), 3)}
    # Without the RBC boxes nothing is above 10: no suggestion, and RBC is named as absent.
    no_rbc = [replace(r, boxes=r.boxes[r.labels != 2], labels=r.labels[r.labels != 2], ignore=r.ignore[r.labels != 2])
              for r in records]
    balance = class_balance(no_rbc, bccd_train.class_names)
    assert (balance["box_ratio"], balance["image_ratio"], balance["absent"]) == (1.02, 1.74, ["RBC"])
    assert balance["suggestion"] is None
