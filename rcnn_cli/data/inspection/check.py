"""What is in the data and everything wrong with it, before training (``rcnn data check``):
the report as a dict, and pictures of samples with their boxes."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ...files import atomic_path
from ..pipeline.repeat import image_class_counts, repeat_factors
from ..readers.sanitize import report
from ..records import ImageRecord, LoadedDataset, ProblemLog
from .duplicates import Fingerprint, find_duplicate_groups, fingerprint

EXAMPLES = 5
# Above this largest/smallest class ratio (boxes or images), ``rcnn data check`` suggests repeat-factor sampling.
IMBALANCE = 10.0
# Thresholds the suggestion picks from: the smallest that repeats the rarest class's images at least twice.
REPEAT_THRESHOLDS = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
# COCO's size classes by box area in pixels.
SMALL, MEDIUM = 32 ** 2, 96 ** 2

T = TypeVar("T")
# progress(items, total, description) -> the same items, shown as they pass (e.g. rich's track).
Progress = Callable[[Iterable[T], int, str], Iterable[T]]


def _no_progress(items: Iterable[T], total: int, description: str) -> Iterator[T]:
    yield from items


def build_report(loaded: LoadedDataset, max_pixels: int | None = None, progress: Progress | None = None
                 ) -> dict[str, Any]:
    """The report as a dict. Every image is read once (header, bytes, pHash), shown by ``progress``:
    images that no longer decode or whose size differs from the record's (an annotation's declared
    size is trusted at load, see ``sanitize.make_record``) are added to ``loaded.problems``.
    Records whose size was not known (YOLO) get it here; those whose image cannot be read are
    dropped from ``loaded.splits``, having no size to report or to fit anchors to."""
    items = [(split, r) for split, recs in loaded.splits.items() for r in recs]
    track = progress or _no_progress
    prints = [fingerprint(r.path, max_pixels) for _, r in track(items, len(items), "reading images")]
    for (_, record), found in zip(items, prints):
        verify_size(record, found, loaded.problems)
    groups = find_duplicate_groups([(split, r.path) for split, r in items], prints)
    loaded.splits = {split: [r for r in recs if r.size_known] for split, recs in loaded.splits.items()}
    records = [r for recs in loaded.splits.values() for r in recs]
    classes = Counter(int(label) for r in records for label in r.labels)
    areas = np.concatenate([(r.boxes[:, 2] - r.boxes[:, 0]) * (r.boxes[:, 3] - r.boxes[:, 1]) for r in records]
                           or [np.zeros(0)])
    widths, heights = [r.width for r in records], [r.height for r in records]
    problems = [{"kind": kind, "count": len(items), "policy": loaded.problems.policies.get(kind, ""),
                 "examples": [f"{p.file}: {p.detail}" if p.detail else p.file for p in items[:EXAMPLES]]}
                for kind, items in loaded.problems.by_kind().items()]
    return {
        "images": len(records),
        "boxes": int(sum(r.num_boxes for r in records)),
        "classes": {name: classes.get(i + 1, 0) for i, name in enumerate(loaded.class_names)},
        "splits": {split: split_summary(recs, loaded.class_names) for split, recs in loaded.splits.items()},
        "empty_images": sum(1 for r in records if r.num_boxes == 0),
        "image_size": {"min": [min(widths, default=0), min(heights, default=0)],
                       "max": [max(widths, default=0), max(heights, default=0)]},
        "box_sizes": {"small": int((areas < SMALL).sum()), "medium": int(((areas >= SMALL) & (areas < MEDIUM)).sum()),
                      "large": int((areas >= MEDIUM).sum())},
        "problems": problems,
        "duplicates": [g for g in groups if "/" not in g["splits"]],
        "leakage": [g for g in groups if "/" in g["splits"]],
        "notes": loaded.notes,
    }


def verify_size(record: ImageRecord, found: Fingerprint, log: ProblemLog) -> None:
    """Report an image that cannot be decoded, or whose header disagrees with the record's size;
    give a record without a size (YOLO's) the header's."""
    from ..images import SWAPS_SIDES

    if found.error:
        report(log, "unreadable_image", record.path, found.error)
        return
    stored = found.size
    upright = (stored[1], stored[0]) if found.orientation in SWAPS_SIDES else stored
    if not record.size_known:
        record.resolve(*upright)
        return
    if upright == (record.width, record.height):
        return
    if found.orientation in SWAPS_SIDES and stored == (record.width, record.height):
        report(log, "unrotated_annotation", record.path, f"size declared for the stored {stored[0]}x{stored[1]} "
                                                         f"pixels (EXIF orientation {found.orientation})")
    else:
        report(log, "wrong_declared_size", record.path, f"annotation says {record.width}x{record.height}, "
                                                        f"the image is {upright[0]}x{upright[1]}")


def split_summary(records: list[ImageRecord], class_names: list[str]) -> dict[str, Any]:
    counts = Counter(int(label) for r in records for label in r.labels)
    return {"images": len(records), "boxes": int(sum(r.num_boxes for r in records)),
            "empty_images": sum(1 for r in records if r.num_boxes == 0),
            "classes": {name: counts.get(i + 1, 0) for i, name in enumerate(class_names)}}


def class_balance(records: list[ImageRecord], class_names: list[str], use_ignored: bool = False,
                  unit: str = "images") -> dict[str, Any]:
    """The class imbalance of the training records: boxes and images containing each class, largest /
    smallest of each (over the classes present), and, when either ratio is above ``IMBALANCE``, the
    repeat-factor setting to try with what it would do (expected epoch length, rarest class's repeat).
    unit: what a record is, as printed ("images", or "tiles" when training on tiles)."""
    boxes = Counter(int(label) for r in records for label, ignored in zip(r.labels, r.ignore)
                    if use_ignored or not ignored)
    images = image_class_counts(records, len(class_names), use_ignored)
    box_counts = {name: boxes.get(i + 1, 0) for i, name in enumerate(class_names)}
    image_counts = {name: int(images[i]) for i, name in enumerate(class_names)}
    result: dict[str, Any] = {"boxes": box_counts, "images": image_counts,
                              "box_ratio": _ratio(box_counts), "image_ratio": _ratio(image_counts),
                              "absent": [name for name, n in box_counts.items() if n == 0], "suggestion": None,
                              "unit": unit}
    if max(result["box_ratio"], result["image_ratio"]) > IMBALANCE:
        present = [i for i in range(len(class_names)) if images[i]]
        rarest = min(present, key=lambda i: (images[i], boxes.get(i + 1, 0)))
        fraction = images[rarest] / len(records)
        thresh = next((t for t in REPEAT_THRESHOLDS if t >= 4 * fraction), REPEAT_THRESHOLDS[-1])
        factors = repeat_factors(records, thresh, len(class_names), use_ignored)
        result["suggestion"] = {"setting": f"dataset.repeat_factor_thresh={thresh:g}", "thresh": thresh,
                                "epoch_images": round(factors.epoch_images, 1), "train_images": len(records),
                                "rarest": class_names[rarest],
                                "rarest_repeat": round(float(factors.per_class[rarest]), 3)}
    return result


def _ratio(counts: dict[str, int]) -> float:
    present = [n for n in counts.values() if n]
    return round(max(present) / min(present), 2) if present else 0.0


def draw_samples(loaded: LoadedDataset, count: int, out: Path, max_pixels: int | None = None) -> list[Path]:
    """Up to ``count`` images with boxes (train first) drawn with their class names, as
    ``out/<n>_<split>_<stem>.png`` (numbered: file stems repeat across folders and splits)."""
    from ..draw import draw_boxes
    from ..images import ImageReadError, read_rgb

    out.mkdir(parents=True, exist_ok=True)
    records = [(split, r) for split in ("train", "val", "test") for r in loaded.splits.get(split, []) if r.num_boxes]
    written: list[Path] = []
    for split, record in records:
        if len(written) == count:
            break
        try:
            image = read_rgb(record.path, max_pixels)
        except ImageReadError:      # already in the problems table; draw the next one instead
            continue
        names = [loaded.class_names[int(label) - 1] for label in record.labels]
        path = out / f"{len(written) + 1:03d}_{split}_{record.path.stem}.png"
        with atomic_path(path) as temp:
            draw_boxes(image, record.boxes, names, record.labels).save(temp, format="PNG")
        written.append(path)
    return written


def draw_augmented(cfg, loaded: LoadedDataset, count: int, out: Path, train: list[ImageRecord] | None = None
                   ) -> list[Path]:
    """What the model sees in training: ``count`` training images through the configured augmentation
    and the model's own resize (``model.min_size`` / ``max_size``, a random size per image when
    min_size is a list), boxes included, as ``out/aug_<n>_<stem>.png``. Catches a wrong flip,
    crop or scale before a run is spent on it. train: the training items when they are not the
    records (``dataset.tile``: tiles)."""
    import torch

    from ...model.structures import PaddedBoxes
    from ...model.transform import ImageTransform
    from ..draw import draw_boxes
    from ..pipeline.augment import build_augment
    from ..pipeline.dataset import DetectionDataset

    model = cfg.model
    transform = ImageTransform(list(model.min_size) if not isinstance(model.min_size, int) else model.min_size,
                               model.max_size, list(model.image_mean), list(model.image_std), model.size_divisible)
    transform.train()
    records = [r for r in (loaded.splits.get("train", []) if train is None else train) if r.num_boxes][:count]
    dataset = DetectionDataset(records, build_augment(cfg.augment, seed=int(cfg.seed)), train=True,
                               max_pixels=cfg.dataset.max_image_pixels)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for index, record in enumerate(records):
        image, target = dataset[index]
        batch = transform([image], PaddedBoxes.from_list([target["boxes"]], [target["labels"]]))
        height, width = batch.image_sizes[0].tolist()
        seen = batch.tensor[0, :, :height, :width] * transform.image_std + transform.image_mean
        pixels = (seen.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        boxes = batch.targets.boxes[0][batch.targets.valid[0]].numpy()
        labels = target["labels"].tolist()
        path = out / f"aug_{index + 1:03d}_{record.path.stem}.png"
        with atomic_path(path) as temp:
            draw_boxes(pixels, boxes, [loaded.class_names[i - 1] for i in labels], labels).save(temp, format="PNG")
        written.append(path)
    return written
