"""Batches that never mix portrait and landscape images (less padding, faster steps), sharded
across DDP ranks by the sampler itself; optionally with rare-class images repeated (``repeat``)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler

from .repeat import expand, expected_batches


class GroupedBatchSampler(Sampler[list[int]]):
    """Yields lists of dataset indices.

    landscape: per item, True when width >= height, None when not known (``landscape_flags``);
    batches hold one of these only.
    Every rank gets the same number of batches (the batch list is padded by repeating its first
    batches), as DDP needs. Training (``pad=True``) uses the repeats as ordinary batches;
    evaluation (``pad=False``) marks them as padding so every image is counted exactly once.

    repeat: per item, its repeat factor r_i (``data/repeat.py``; training only): each epoch item i
    appears floor(r_i) times plus once more with probability frac(r_i), drawn from ``seed + epoch``
    alone, so every rank builds the same expanded list before taking its shard. The epoch is then
    cut or topped up (with its first batches) to the batch count of its expected length, the same
    every epoch: Lightning counts an epoch's steps once, at the start of training.

    sources: per item, the picture it comes from (training on tiles, ``data/tiles.py``): shuffling then
    orders the pictures at random and each picture's items at random, but keeps a picture's items
    together, so a worker decodes an 8,000 px picture once for several of its tiles, not once per tile.
    """

    def __init__(self, landscape: Sequence[bool | None], batch_size: int, shuffle: bool, seed: int = 0,
                 rank: int = 0, world_size: int = 1, pad: bool = True, group: bool = True,
                 repeat: Sequence[float] | None = None, sources: Sequence[int] | None = None):
        self.landscape = [None if x is None else bool(x) for x in landscape]
        self.batch_size = max(int(batch_size), 1)
        self.shuffle, self.seed, self.pad, self.group = shuffle, seed, pad, group
        self.rank, self.world_size = rank, world_size
        self.repeat = None if repeat is None else [float(r) for r in repeat]
        if self.repeat is not None and len(self.repeat) != len(self.landscape):
            raise ValueError(f"{len(self.repeat)} repeat factors for {len(self.landscape)} items")
        self.sources = None if sources is None else torch.as_tensor(list(sources), dtype=torch.long)
        if self.sources is not None and len(self.sources) != len(self.landscape):
            raise ValueError(f"{len(self.sources)} sources for {len(self.landscape)} items")
        self.epoch = 0
        self.sampler = _EpochHook(self)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def expanded(self) -> list[int]:
        """This epoch's indices in order, before batching: every index once, or with ``repeat``
        as drawn for this epoch (the same on every rank)."""
        n = len(self.landscape)
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        items = list(range(n)) if self.repeat is None else expand(self.repeat, generator)
        if not self.shuffle:
            return items
        if self.sources is not None:
            return self._shuffled_by_source(items, generator)
        return [items[i] for i in torch.randperm(len(items), generator=generator).tolist()]

    def _shuffled_by_source(self, items: list[int], generator: torch.Generator) -> list[int]:
        """Sources in random order, each source's items in random order, kept together."""
        if not items:
            return items
        source_rank = torch.randperm(int(self.sources.max()) + 1, generator=generator)
        within = torch.rand(len(items), generator=generator, dtype=torch.float64)
        keys = source_rank[self.sources[torch.as_tensor(items, dtype=torch.long)]].double() + within
        return [items[i] for i in torch.argsort(keys, stable=True).tolist()]

    def _keys(self) -> list[bool | None]:
        return self.landscape if self.group else [True] * len(self.landscape)

    def _all_batches(self) -> list[list[int]]:
        order = self.expanded()
        buckets: dict[bool | None, list[int]] = {True: [], False: [], None: []}
        batches = []
        for index in order:
            key = self.landscape[index] if self.group else True
            buckets[key].append(index)
            if len(buckets[key]) == self.batch_size:
                batches.append(buckets[key])
                buckets[key] = []
        batches += [bucket for bucket in buckets.values() if bucket]
        if self.repeat is not None and batches:
            length = expected_batches(self.repeat, self._keys(), self.batch_size)
            batches = (batches * (length // len(batches) + 1))[:length]
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


def landscape_flags(records: Sequence) -> list[bool | None]:
    """Per record, whether it is landscape (width >= height), for ``GroupedBatchSampler``; None where
    the size is not known without opening the image (YOLO, ``records.NormalisedRecord``): such
    images form a group of their own, and no rank reads every header to sort them."""
    return [r.width >= r.height if getattr(r, "size_known", True) else None for r in records]
