"""A torch Dataset over image records: decode, augment, hand out tensors."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from .images import ImageReadError, read_rgb
from .records import ImageRecord

Target = dict[str, Any]


class DetectionDataset(Dataset):
    """Items are ``(image (3, H, W) uint8, {"boxes": (N, 4) float32 xyxy, "labels": (N,) int64,
    "ignore": (N,) bool, "index": int})``; ``index`` is the record's position in the split.

    train: boxes marked ignore (VOC difficult, COCO crowd) are removed unless ``use_ignored``;
    for evaluation they stay, flagged, so that matching them is neither a hit nor a miss.
    max_pixels: dataset.max_image_pixels, the limit the records were loaded under (None: its default).
    """

    def __init__(self, records: list[ImageRecord], transform=None, train: bool = False,
                 use_ignored: bool = False, max_pixels: int | None = None):
        self.records = records
        self.transform = transform
        self.train = train
        self.use_ignored = use_ignored
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Target]:
        record = self.records[index]
        try:
            image = read_rgb(record.path, self.max_pixels)
        except ImageReadError as err:
            # Raised inside a DataLoader worker: the message must say which file it was.
            raise ImageReadError(f"while loading a batch: {err}") from None
        boxes, labels, ignore = record.boxes, record.labels, record.ignore
        if self.train:
            if self.use_ignored:
                ignore = np.zeros_like(ignore)
            else:
                boxes, labels, ignore = boxes[~ignore], labels[~ignore], ignore[~ignore]
        if image.shape[:2] != (record.height, record.width):
            raise ImageReadError(f"{record.path}: changed on disk since it was indexed "
                                 f"({image.shape[1]}x{image.shape[0]}, expected {record.width}x{record.height})")
        if self.transform is not None:
            out = self.transform(image=image, bboxes=boxes, labels=labels, ignore=ignore)
            image = out["image"]
            boxes = np.asarray(out["bboxes"], np.float32).reshape(-1, 4)
            labels, ignore = np.asarray(out["labels"], np.int64), np.asarray(out["ignore"], bool)
        target = {"boxes": torch.from_numpy(np.ascontiguousarray(boxes, np.float32)),
                  "labels": torch.from_numpy(np.asarray(labels, np.int64)),
                  "ignore": torch.from_numpy(np.asarray(ignore, bool)),
                  "index": index}
        return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1), target


def reseed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: give each worker's augmentation its own random stream.

    albumentations keeps its random state inside the Compose; forked workers would all inherit
    the same state and draw the same flips and zooms in lockstep. torch seeds every worker
    differently (base seed + worker id, reproducible under ``seed_everything``), so use that.
    """
    info = get_worker_info()
    transform = getattr(info.dataset, "transform", None) if info is not None else None
    if transform is not None and hasattr(transform, "set_random_seed"):
        transform.set_random_seed(torch.initial_seed() % 2**32)


def collate(batch: list[tuple[torch.Tensor, Target]]) -> tuple[list[torch.Tensor], list[Target]]:
    """Images keep their own sizes (the detector resizes and pads them as one batch)."""
    images, targets = zip(*batch)
    return list(images), list(targets)
