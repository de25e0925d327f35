"""YOLO txt layout: ``images/<split>/x.jpg`` + ``labels/<split>/x.txt`` with normalised
``class cx cy w h`` lines and class names in ``data.yaml`` (Ultralytics' and Roboflow's export)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from ..errors import DatasetError
from ..images import IMAGE_EXTENSIONS
from ..records import LoadedDataset, NormalisedRecord, ProblemLog
from .sanitize import clean_boxes, report

# YOLO's cx, cy, w, h are fractions of the image: a value past 1 by rounding or a box that sticks out a
# little is clipped as any box outside the image; one this large means the file holds pixels.
UNNORMALISED = 1.5
SPLIT_KEYS = {"train": ("train",), "val": ("val", "valid"), "test": ("test",)}


def read_data_yaml(root: Path) -> dict:
    path = root / "data.yaml"
    if not path.is_file():
        raise DatasetError(f"dataset.root {root}: no data.yaml (it lists the class names); see the YOLO export")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise DatasetError(f"{path}: invalid YAML{where}") from None
    if not isinstance(data, dict) or "names" not in data:
        raise DatasetError(f"{path}: no 'names' entry with the class names")
    names = data["names"]
    if not (isinstance(names, list) or isinstance(names, dict) and all(_is_index(k) for k in names)):
        # a bare string would become one class per letter, a number or null nothing to iterate
        raise DatasetError(f"{path}: 'names' is {names!r:.40}; write the class names as a list ([cell, dog]) "
                           "or by index ({0: cell, 1: dog})")
    return data


def _is_index(key) -> bool:
    return isinstance(key, int) and not isinstance(key, bool) or isinstance(key, str) and key.isdigit()


def class_names_of(data: dict) -> list[str]:
    names = data["names"]
    if isinstance(names, dict):  # {0: person, 1: car}
        return [str(names[k]) for k in sorted(names, key=int)]
    return [str(n) for n in names]


def split_images_dir(root: Path, data: dict, split: str) -> Path | None:
    for key in SPLIT_KEYS[split]:
        entry = data.get(key)
        if isinstance(entry, str):
            for candidate in (root / entry, (root / entry).resolve(), root / entry.lstrip("./").replace("../", "")):
                if candidate.is_dir():
                    return candidate
        if (root / "images" / key).is_dir():
            return root / "images" / key
        if (root / key / "images").is_dir():  # Roboflow's YOLO export: train/images, valid/images
            return root / key / "images"
    return None


def label_file(image: Path) -> Path:
    """images/train/a.jpg -> labels/train/a.txt (the last 'images' folder becomes 'labels')."""
    parts = list(image.parts)
    index = len(parts) - 1 - parts[::-1].index("images") if "images" in parts else None
    if index is None:
        return image.with_suffix(".txt")
    parts[index] = "labels"
    return Path(*parts).with_suffix(".txt")


def read_labels(path: Path, num_classes: int, log: ProblemLog) -> tuple[np.ndarray, np.ndarray]:
    """(boxes (N, 4) float64 xyxy as fractions of the image, labels (N,) in 1..C) of one label file."""
    boxes, labels, largest = [], [], 0.0
    if not path.is_file():
        return np.zeros((0, 4), np.float64), np.zeros((0,), np.int64)
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        try:
            cls, cx, cy, w, h = int(fields[0]), *(float(v) for v in fields[1:5])
        except (ValueError, TypeError):
            report(log, "bad_annotation", path, f"line {number}: expected 'class cx cy w h'")
            continue
        if len(fields) > 5 and len(fields) % 2 == 1:  # polygon (segmentation) rows are out of scope
            report(log, "bad_annotation", path, f"line {number}: segmentation polygon, not a box")
            continue
        if not 0 <= cls < num_classes:
            report(log, "unknown_label", path, f"line {number}: class {cls}")
            continue
        boxes.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
        labels.append(cls + 1)
        largest = max([largest, *(abs(v) for v in (cx, cy, w, h) if np.isfinite(v))])
    if largest > UNNORMALISED:
        # Pixel coordinates: every box would be reported one by one as outside the image, which hides the
        # one cause; the image size that would normalise them is not known without opening the image.
        report(log, "unnormalised_labels", path, f"coordinates up to {largest:g}: the file looks un-normalised "
                                                 "(YOLO wants 0-1 fractions of the image size)")
        return np.zeros((0, 4), np.float64), np.zeros((0,), np.int64)
    return np.array(boxes, np.float64).reshape(-1, 4), np.array(labels, np.int64)


def load_yolo(cfg, splits, log: ProblemLog) -> LoadedDataset:
    """Records that keep YOLO's fractions (NormalisedRecord): no image is opened here; the first
    read of an image, or ``rcnn data check``, gives its size and refuses one that cannot be read."""
    root = Path(cfg.root) if cfg.root else None
    if root is None or not root.is_dir():
        raise DatasetError(f"dataset.root {root}: folder not found (the folder with data.yaml)")
    data = read_data_yaml(root)
    class_names = class_names_of(data)
    limit = cfg.max_image_pixels
    records: dict[str, list[NormalisedRecord]] = {}
    for split in splits:
        images_dir = split_images_dir(root, data, split)
        if images_dir is None:
            continue
        records[split] = []
        for image in sorted(p for p in images_dir.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS):
            record = _record(image, len(class_names), log, limit)
            if record is not None:
                records[split].append(record)
    if not records:
        raise DatasetError(f"{root}: no image folders for {list(splits)} (expected images/train, images/val "
                           "or the paths in data.yaml)")
    return LoadedDataset(class_names, records)


def _record(image: Path, num_classes: int, log: ProblemLog, max_pixels: int | None) -> NormalisedRecord | None:
    labels_path = label_file(image)
    if not image.is_file():
        report(log, "missing_image", labels_path, f"{image} does not exist")
        return None
    boxes, labels = read_labels(labels_path, num_classes, log)
    # Fractions of the image: clipping to 1 x 1 is clipping to the image, whatever its size.
    keep = clean_boxes(boxes, 1, 1, labels_path, log, unit="of the image", min_side=1e-6)
    return NormalisedRecord(image, boxes[keep], labels[keep], np.zeros(len(keep), bool), image.stem, max_pixels)
