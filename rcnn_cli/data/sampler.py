"""Batches that never mix portrait and landscape images (less padding, faster steps), sharded
across DDP ranks by the sampler itself."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler


class GroupedBatchSampler(Sampler[list[int]]):
    """Yields lists of dataset indices.

    landscape: per item, True when width >= height; batches hold one orientation only.
    Every rank gets the same number of batches (the batch list is padded by repeating its first
    batches), as DDP needs. Training (``pad=True``) uses the repeats as ordinary batches;
    evaluation (``pad=False``) marks them as padding so every image is counted exactly once.
    """

    def __init__(self, landscape: Sequence[bool], batch_size: int, shuffle: bool, seed: int = 0,
                 rank: int = 0, world_size: int = 1, pad: bool = True, group: bool = True):
        self.landscape = [bool(x) for x in landscape]
        self.batch_size = max(int(batch_size), 1)
        self.shuffle, self.seed, self.pad, self.group = shuffle, seed, pad, group
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.sampler = _EpochHook(self)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _all_batches(self) -> list[list[int]]:
        n = len(self.landscape)
        if self.shuffle:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist()
        else:
            order = list(range(n))
        buckets: dict[bool, list[int]] = {True: [], False: []}
        batches = []
        for index in order:
            key = self.landscape[index] if self.group else True
            buckets[key].append(index)
            if len(buckets[key]) == self.batch_size:
                batches.append(buckets[key])
                buckets[key] = []
        batches += [bucket for bucket in buckets.values() if bucket]
        return batches

    def _my_batches(self) -> list[list[int]]:
        batches = self._all_batches()
        if self.world_size > 1 and batches and len(batches) % self.world_size:
            missing = self.world_size - len(batches) % self.world_size
            extra = (batches * self.world_size)[:missing]
            # Evaluation: every rank must still run as many steps (DDP collectives would wait forever for
            # a rank with none), but each image must count once: the copies are marked as padding.
            batches += extra if self.pad else [[as_padding(i) for i in batch] for batch in extra]
        return batches[self.rank::self.world_size]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._my_batches())

    def __len__(self) -> int:
        return len(self._my_batches())


def as_padding(index: int) -> int:
    """Dataset index -> the marked copy the dataset returns flagged ``padding`` (see DetectionDataset)."""
    return -index - 1


class _EpochHook:
    """Lightning reshuffles by calling ``loader.sampler.set_epoch`` and
    ``loader.batch_sampler.sampler.set_epoch`` each epoch, never ``batch_sampler.set_epoch``;
    this stands in as ``.sampler`` so that a new epoch reaches the batch sampler."""

    def __init__(self, owner: GroupedBatchSampler):
        self.owner = owner

    def set_epoch(self, epoch: int) -> None:
        self.owner.set_epoch(epoch)
