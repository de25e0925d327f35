"""The LightningDataModule: configured data -> batched, augmented, rank-sharded DataLoaders."""

from __future__ import annotations

import os

import lightning as L
import torch
from lightning.pytorch.accelerators import CUDAAccelerator
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader

from ...hardware import cpu_count
from ..readers.load import load_dataset
from ..records import ImageRecord, LoadedDataset
from .augment import build_augment
from .dataset import DetectionDataset, ReseedWorker, collate, stream_seed
from .repeat import RepeatFactors, repeat_factors
from .sampler import GroupedBatchSampler, landscape_flags
from .tiles import source_positions, tile_records, tiling_summary


def worker_count(setting, cpus: int | None = None) -> int:
    """``num_workers: auto``: one core stays with the training process; at most 4 workers (more
    rarely speeds up JPEG decoding of detection-sized batches and costs memory per worker); none
    on a 1-2 core machine, where a worker would only compete with training."""
    if setting not in (None, "auto"):
        return int(setting)
    cpus = cpus or cpu_count()
    return min(4, cpus - 1) if cpus > 2 else 0


class DetectionDataModule(L.LightningDataModule):
    """Batches are ``(images, targets)`` as ``dataset.collate`` makes them. ``cfg`` is the root
    config (``dataset``, ``augment``, ``seed``)."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.loaded: LoadedDataset | None = None
        self._train_items: list[ImageRecord] | None = None

    # -- data -----------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.loaded is None:
            self.loaded = load_dataset(self.cfg.dataset, ("train", "val", "test"))
            for line in problem_summary(self.loaded):
                rank_zero_info(line)

    @property
    def class_names(self) -> list[str]:
        self.setup()
        return self.loaded.class_names

    @property
    def category_ids(self) -> list[int] | None:
        self.setup()
        return self.loaded.category_ids

    def records(self, split: str) -> list[ImageRecord]:
        """The split's records; ``test`` falls back to ``val`` when the data has no test split."""
        self.setup()
        splits = self.loaded.splits
        if split == "test" and not splits.get("test"):
            split = "val"
        return splits.get(split) or []

    @property
    def tile(self) -> int | None:
        """``dataset.tile``: training on tiles of pictures larger than this many px (None: off)."""
        tile = self.cfg.dataset.tile
        return None if tile is None else int(tile)

    def train_items(self) -> list[ImageRecord]:
        """What an epoch is made of: the training records, or with ``dataset.tile`` their tiles (pictures
        no larger than the tile stay whole). Computed from the records and settings alone, the same on
        every DDP rank."""
        if self._train_items is None:
            records = self.records("train")
            self._train_items = records if self.tile is None else self._tiles(records)
        return self._train_items

    def _tiles(self, records: list[ImageRecord]) -> list[ImageRecord]:
        data = self.cfg.dataset
        items = tile_records(records, self.tile, float(data.tile_overlap), float(data.tile_min_visibility),
                             float(data.tile_empty_share), seed=int(self.cfg.seed),
                             use_ignored=bool(data.use_difficult))
        summary = tiling_summary(records, items)
        rank_zero_info(f"data: training on tiles (dataset.tile={self.tile}, tile_overlap={data.tile_overlap:g}): "
                       f"{summary['cut_images']} of {summary['images']} images cut into {summary['tiles']} tiles "
                       f"({summary['empty_tiles']} without boxes), the others whole: {summary['items']} items an "
                       "epoch")
        return items

    # -- loaders ---------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        # Each rank its own augmentation stream (workers are reseeded per rank and worker too).
        rank = self._rank_and_world()[0]
        # Seeded from augment.seed, else the run's seed: `seed=N` must give the same flips and zooms.
        base = self.cfg.augment.seed
        base = int(self.cfg.seed) if base is None else int(base)
        augment = build_augment(self.cfg.augment, seed=stream_seed(base, rank))
        dataset = DetectionDataset(self.train_items(), augment, train=True,
                                   use_ignored=bool(self.cfg.dataset.use_difficult),
                                   max_pixels=self._max_pixels())
        return self._loader(dataset, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(DetectionDataset(self.records("val"), max_pixels=self._max_pixels()), train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(DetectionDataset(self.records("test"), max_pixels=self._max_pixels()), train=False)

    def _max_pixels(self) -> int | None:
        return self.cfg.dataset.max_image_pixels

    def _loader(self, dataset: DetectionDataset, train: bool) -> DataLoader:
        data = self.cfg.dataset
        rank, world = self._rank_and_world()
        group = bool(data.group_aspect_ratio) and int(data.batch_size) > 1
        factors = self.repeat_factors() if train else None          # validation is never repeated
        sampler = GroupedBatchSampler(landscape_flags(dataset.records), int(data.batch_size),
                                      shuffle=train, seed=int(self.cfg.seed), rank=rank,
                                      world_size=world, pad=train, group=group,
                                      repeat=None if factors is None else factors.per_image,
                                      sources=source_positions(dataset.records) if train and self.tile else None)
        workers = worker_count(data.num_workers)
        return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=workers,
                          persistent_workers=workers > 0, pin_memory=self._uses_gpu(),
                          worker_init_fn=ReseedWorker(rank) if workers > 0 else None)

    def repeat_factors(self) -> RepeatFactors | None:
        """The training items' repeat factors under ``dataset.repeat_factor_thresh`` (None: off); with
        ``dataset.tile`` each tile's from the classes inside it, f_c the share of tiles holding c."""
        thresh = self.cfg.dataset.repeat_factor_thresh
        if thresh is None:
            return None
        records = self.train_items()
        items = "images" if self.tile is None else "items (tiles)"
        factors = repeat_factors(records, float(thresh), len(self.class_names),
                                 use_ignored=bool(self.cfg.dataset.use_difficult))
        repeated = ", ".join(f"{name} x{r:.2f}" for name, r in zip(self.class_names, factors.per_class) if r > 1)
        rank_zero_info(f"data: repeat-factor sampling (dataset.repeat_factor_thresh={thresh:g}): "
                       f"~{factors.epoch_images:.0f} {items} an epoch from {len(records)}; "
                       + (f"{items} with {repeated}" if repeated else "no class under the threshold, no repeats"))
        return factors

    def _rank_and_world(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is not None:
            return trainer.global_rank, trainer.world_size
        return 0, 1

    def _uses_gpu(self) -> bool:
        """Pinned memory only helps host-to-GPU copies: on when CUDA is there and not turned off
        by a CPU trainer."""
        if not torch.cuda.is_available():
            return False
        return self.trainer is None or isinstance(self.trainer.accelerator, CUDAAccelerator)


def problem_summary(loaded: LoadedDataset, examples: int = 2) -> list[str]:
    """One line per problem kind: count, policy, first files; then the loaders' notes."""
    lines = []
    for kind, problems in loaded.problems.by_kind().items():
        files = ", ".join(sorted({os.path.basename(p.file) for p in problems})[:examples])
        policy = loaded.problems.policies.get(kind, "")
        lines.append(f"data: {len(problems)} x {kind} ({policy}), e.g. {files}")
    lines += [f"data: note: {note}" for note in loaded.notes]
    return lines
