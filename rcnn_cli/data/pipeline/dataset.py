"""A torch Dataset over image records: decode, augment, hand out tensors."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from ..images import ImageReadError, read_rgb
from ..records import ImageRecord

Target = dict[str, Any]


class DetectionDataset(Dataset):
    """Items are ``(image (3, H, W) uint8, {"boxes": (N, 4) float32 xyxy, "labels": (N,) int64,
    "ignore": (N,) bool, "index": int})``; ``index`` is the record's position in the split.

    train: boxes marked ignore (VOC difficult, COCO crowd) are removed unless ``use_ignored``;
    for evaluation they stay, flagged, so that matching them is neither a hit nor a miss.
    max_pixels: dataset.max_image_pixels, the limit the records were loaded under (None: its default).

    Records may be tiles (``tiles.TileRecord``): the tile is cropped from its decoded picture, and the
    last decoded picture is kept (one per DataLoader worker, e.g. 144 MB for 8,000 x 6,000) because the
    sampler hands a picture's tiles out together; decoding the whole picture again per tile is what
    this saves (JPEG and PNG decoders cannot decode a region alone).
    """

    def __init__(self, records: list[ImageRecord], transform=None, train: bool = False,
                 use_ignored: bool = False, max_pixels: int | None = None):
        self.records = records
        self.transform = transform
        self.train = train
        self.use_ignored = use_ignored
        self.max_pixels = max_pixels
        self._last_decoded: tuple[str, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, Target]:
        # A negative index is a DDP padding copy of record -index-1 (sampler.as_padding): it is loaded
        # like the original and flagged so that evaluation leaves it out.
        padding = index < 0
        index = -index - 1 if padding else index
        record = self.records[index]
        try:
            image = self._pixels(record)
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
            boxes = _turned_boxes(record, image, boxes, self.max_pixels)
        if self.transform is not None:
            out = self.transform(image=image, bboxes=boxes, labels=labels, ignore=ignore)
            image = out["image"]
            boxes = np.asarray(out["bboxes"], np.float32).reshape(-1, 4)
            labels, ignore = np.asarray(out["labels"], np.int64), np.asarray(out["ignore"], bool)
        target = {"boxes": torch.from_numpy(np.ascontiguousarray(boxes, np.float32)),
                  "labels": torch.from_numpy(np.asarray(labels, np.int64)),
                  "ignore": torch.from_numpy(np.asarray(ignore, bool)),
                  "index": index, "padding": padding}
        return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1), target

    def _pixels(self, record: ImageRecord) -> np.ndarray:
        window = getattr(record, "window", None)
        if window is None:
            return read_rgb(record.path, self.max_pixels)
        x0, y0, x1, y1 = window
        return self._decoded(record.source)[y0:y1, x0:x1].copy()     # a copy: the cached picture stays intact

    def _decoded(self, source: ImageRecord) -> np.ndarray:
        """The whole picture a tile is cut from, decoded once for consecutive tiles of it."""
        key = str(source.path)
        if self._last_decoded is None or self._last_decoded[0] != key:
            self._last_decoded = None                  # free the previous picture before decoding the next
            image = read_rgb(source.path, self.max_pixels)
            if image.shape[:2] != (source.height, source.width):
                raise ImageReadError(f"{source.path}: decoded as {image.shape[1]}x{image.shape[0]}, annotated as "
                                     f"{source.width}x{source.height}; tiles are cut from the annotated size "
                                     "(`rcnn data check` lists such images)")
            self._last_decoded = (key, image)
        return self._last_decoded[1]


def _turned_boxes(record: ImageRecord, image: np.ndarray, boxes: np.ndarray, max_pixels: int | None
                  ) -> np.ndarray:
    """The boxes of a record whose declared size (trusted at load, see ``sanitize.make_record``) is
    not the decoded one: turned upright when it is the stored size of an EXIF-rotated photo (the
    tool labelled the stored pixels); otherwise ImageReadError naming the file."""
    from ..images import SWAPS_SIDES, image_header, upright_boxes

    if image.shape[:2] == (record.width, record.height):
        width, height, orientation = image_header(record.path, max_pixels)
        if orientation in SWAPS_SIDES and (width, height) == (record.width, record.height):
            return upright_boxes(boxes, orientation, width, height)
    raise ImageReadError(f"{record.path}: changed on disk since it was indexed, or its annotation declares a "
                         f"wrong size ({image.shape[1]}x{image.shape[0]}, expected {record.width}x{record.height}; "
                         "`rcnn data check` lists such images)")


def stream_seed(*parts: int) -> int:
    """One 32-bit seed from several numbers (run seed, rank, worker seed), well mixed: nearby inputs
    give unrelated streams, and the same inputs the same stream."""
    return int(np.random.SeedSequence([int(p) % 2**63 for p in parts]).generate_state(1)[0])


class ReseedWorker:
    """DataLoader ``worker_init_fn``: give each worker of each DDP rank its own augmentation stream.

    albumentations keeps its random state inside the Compose; forked workers would all inherit
    the same state and draw the same flips and zooms in lockstep. torch seeds every worker
    differently (base seed + worker id, reproducible under ``seed_everything``), but that base
    seed is the same on every rank, so the rank is mixed in. A class, not a closure, so that it
    pickles when workers are spawned (macOS, Windows).
    """

    def __init__(self, rank: int = 0):
        self.rank = rank

    def __call__(self, worker_id: int) -> None:
        info = get_worker_info()
        transform = getattr(info.dataset, "transform", None) if info is not None else None
        if transform is not None and hasattr(transform, "set_random_seed"):
            transform.set_random_seed(stream_seed(torch.initial_seed(), self.rank))


reseed_worker = ReseedWorker(0)


def collate(batch: list[tuple[torch.Tensor, Target]]) -> tuple[list[torch.Tensor], list[Target]]:
    """Images keep their own sizes (the detector resizes and pads them as one batch)."""
    images, targets = zip(*batch)
    return list(images), list(targets)
