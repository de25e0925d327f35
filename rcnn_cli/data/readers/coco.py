"""COCO instances JSON (any tool's export, Roboflow's ``_annotations.coco.json`` folders included).

Category ids may start at 0 or have gaps: they map to contiguous labels 1..C (0 is background)
and ``LoadedDataset.category_ids`` maps them back when results are written.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Hashable
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DatasetError
from ..records import ImageRecord, ProblemLog
from .sanitize import make_record, report, safe_join, trusted_size

ROBOFLOW_JSON = "_annotations.coco.json"
ROBOFLOW_SPLITS = {"train": "train", "val": "valid", "test": "test"}


@dataclass
class CocoFile:
    """One parsed COCO file: categories {id: name}, images {id: info}, and the annotations of those
    images in file order, with ``owners[k]``: the position in ``images`` of annotation k's image."""

    path: Path
    images_dir: Path
    categories: dict[int, str]
    images: dict[int, dict[str, Any]]
    annotations: list[dict[str, Any]]
    owners: np.ndarray


def read_json(path: Path) -> Any:
    """orjson parses COCO-sized files several times faster than json (a 106 MB file: most of the
    start-up); a file it refuses is read again by json, which words the error (line, column) or
    accepts what orjson does not (NaN, Infinity)."""
    import orjson

    if not path.is_file():
        raise DatasetError(f"{path}: annotation file not found; check the dataset path")
    try:
        return orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError:
        pass
    try:
        with open(path, encoding="utf-8") as file:
            return json.load(file)
    except json.JSONDecodeError as err:
        raise DatasetError(f"{path}: invalid JSON at line {err.lineno} column {err.colno} ({err.msg})") from None
    except UnicodeDecodeError:
        raise DatasetError(f"{path}: not UTF-8 text; re-export the annotations as UTF-8 JSON") from None


def parse_coco(path: Path, images_dir: Path, log: ProblemLog) -> CocoFile:
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DatasetError(f"{path}: not a COCO instances file (no 'images' list)")
    for key in ("categories", "annotations"):
        if not isinstance(data.get(key) or [], list):
            raise DatasetError(f"{path}: '{key}' is a {type(data[key]).__name__}, not a list; "
                               "is this a COCO instances file?")
    categories: dict[int, str] = {}
    for category in data.get("categories") or []:
        try:
            categories[int(category["id"])] = str(category["name"])
        except (KeyError, TypeError, ValueError, OverflowError):      # OverflowError: an id of Infinity
            report(log, "bad_annotation", path, f"category entry {category!r:.80}")
    images: dict[int, dict[str, Any]] = {}
    for image in data["images"]:
        try:
            image_id = int(image["id"])
            str(image["file_name"])
        except (KeyError, TypeError, ValueError, OverflowError):
            report(log, "bad_annotation", path, f"image entry {image!r:.80}")
            continue
        if image_id in images:
            report(log, "duplicate_image_id", path, f"image id {image_id}")
            continue
        images[image_id] = image
    annotations, owners = _owned_annotations(data.get("annotations") or [], images, path, log)
    return CocoFile(path, images_dir, categories, images, annotations, owners)


def _owned_annotations(annotations: list, images: dict[int, dict], path: Path, log: ProblemLog
                       ) -> tuple[list[dict[str, Any]], np.ndarray]:
    """The annotations whose image is in ``images`` and their images' positions; the others are
    reported. One comprehension over all of them: a COCO file has ~7 per image."""
    position = {image_id: index for index, image_id in enumerate(images)}
    owners = np.array([position.get(image_id, -1) if isinstance(a, dict) and isinstance(image_id := a.get("image_id"),
                                                                                     Hashable) else -1
                       for a in annotations], np.int64)
    for index in np.flatnonzero(owners < 0).tolist():
        annotation = annotations[index]
        report(log, "bad_annotation", path, f"annotation for unknown image {_get(annotation, 'image_id')!r:.40}")
    kept = np.flatnonzero(owners >= 0)
    if len(kept) == len(annotations):
        return list(annotations), owners
    return [annotations[i] for i in kept.tolist()], owners[kept]


def _get(item: Any, key: str) -> Any:
    return item.get(key) if isinstance(item, dict) else None


def category_table(files: list[CocoFile], class_names: list[str] | None, log: ProblemLog, notes: list[str]
                   ) -> tuple[list[str], list[int]]:
    """(class names, their category ids), label i = position i-1. Categories no annotation uses
    (Roboflow's placeholder superclass) are dropped unless the config names them."""
    names: dict[int, str] = {}
    for coco in files:
        names.update(coco.categories)
    used = {c for coco in files for a in coco.annotations if isinstance(c := a.get("category_id"), Hashable)}
    if class_names:
        by_name = {name: cid for cid, name in names.items()}
        missing = [n for n in class_names if n not in by_name]
        if missing:
            raise DatasetError(f"{files[0].path}: dataset.class_names {missing} are not categories of this file "
                               f"(it has {sorted(by_name)})")
        return list(class_names), [by_name[n] for n in class_names]
    unused = sorted(cid for cid in names if cid not in used)
    if unused and len(unused) < len(names):
        notes.append("dropped categories without annotations: " + ", ".join(names[c] for c in unused))
    ids = sorted(cid for cid in names if cid in used) or sorted(names)
    return [names[c] for c in ids], ids


@dataclass
class _Columns:
    """Every annotation of a file as arrays, grouped by image: image i owns rows starts[i]:starts[i+1]."""

    boxes: np.ndarray       # (A, 4) float32 xyxy
    labels: np.ndarray      # (A,) int64
    ignore: np.ndarray      # (A,) bool
    starts: np.ndarray      # (I + 1,)
    order: np.ndarray       # (A,) row -> index into CocoFile.annotations


def coco_records(coco: CocoFile, category_ids: list[int], log: ProblemLog, max_pixels: int | None = None
                 ) -> list[ImageRecord]:
    """Records of one file; images[].width/height, when given, are trusted without opening the image
    (``sanitize.trusted_size``); images without them are opened for their size.

    Linear in the annotations, with numpy doing the per-box work: an image whose annotations and
    declared size pass every check takes the fast path (slices of the file's arrays); any other
    image goes through ``_checked_record``, which reports its problems one by one. Clean images
    report nothing, so the problems come out as from checking every image one by one."""
    from ..images import default_max_pixels

    label_of = {cid: i + 1 for i, cid in enumerate(category_ids)}
    limit = max_pixels or default_max_pixels()
    sizes = [_usable_size(image, limit) for image in coco.images.values()]
    widths, heights = (np.array(side, np.float32) for side in zip(*sizes)) if sizes else (np.zeros(0),) * 2
    columns, clean = _columns(coco, label_of, widths, heights)
    listing = _regular_files(coco.images_dir)
    root = Path(os.path.realpath(coco.images_dir))
    records = []
    for index, (image_id, image) in enumerate(coco.images.items()):
        name = str(image["file_name"])
        start, end = columns.starts[index], columns.starts[index + 1]
        if clean[index] and name in listing:
            records.append(ImageRecord(root / name, *sizes[index], columns.boxes[start:end],
                                       columns.labels[start:end], columns.ignore[start:end], image_id))
            continue
        owned = [coco.annotations[k] for k in columns.order[start:end].tolist()]
        record = _checked_record(coco, image_id, image, owned, label_of, log, max_pixels)
        if record is not None:
            records.append(record)
    return records


def _usable_size(image: dict[str, Any], limit: int) -> tuple[int, int]:
    """The declared (width, height) when ``make_record`` would trust it, else (0, 0)."""
    declared = (_int_or_none(image.get("width")), _int_or_none(image.get("height")))
    return declared if trusted_size(declared, limit) else (0, 0)


def _columns(coco: CocoFile, label_of: dict[Any, int], widths: np.ndarray, heights: np.ndarray
             ) -> tuple[_Columns, np.ndarray]:
    """The annotations as arrays grouped by image, and per image whether all of it is clean: a
    usable declared size, and every annotation a valid bbox of a known category with nothing for
    ``clean_boxes`` to report."""
    annotations = coco.annotations
    xywh, valid = _bbox_array([a.get("bbox") for a in annotations])
    labels = _labels([a.get("category_id") for a in annotations], label_of)
    ignore = np.array([bool(a.get("iscrowd", 0)) for a in annotations], bool)
    with np.errstate(over="ignore"):        # 1e308-sized boxes: ``_checked_record`` reports them
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1).astype(np.float32)
    owners = coco.owners
    trouble = ~valid | (labels <= 0) | _box_trouble(boxes, widths[owners], heights[owners])
    clean = widths > 0
    clean[owners[trouble]] = False
    order = np.argsort(owners, kind="stable")
    starts = np.searchsorted(owners[order], np.arange(len(widths) + 1))
    return _Columns(boxes[order], labels[order], ignore[order], starts, order), clean


def _bbox_array(bboxes: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    """(A, 4) float64 [x, y, w, h] (zeros where invalid) and (A,) whether each is a list of four numbers."""
    if all(type(b) is list and len(b) == 4 for b in bboxes):
        flat = list(chain.from_iterable(bboxes))
        if set(map(type, flat)) <= {int, float}:            # JSON numbers; bool is refused as before
            return np.array(flat, np.float64).reshape(-1, 4), np.ones(len(bboxes), bool)
    valid = [_is_bbox(b) for b in bboxes]
    values = [b if ok else [0, 0, 0, 0] for b, ok in zip(bboxes, valid)]
    return np.array(values, np.float64).reshape(-1, 4), np.array(valid, bool)


def _is_bbox(bbox: Any) -> bool:
    return isinstance(bbox, list) and len(bbox) == 4 and all(_is_number(v) for v in bbox)


def _labels(categories: list[Any], label_of: dict[Any, int]) -> np.ndarray:
    """(A,) label of each category id: 0 for an unknown one, -1 for one that cannot be looked up
    (a list: reported as an unknown label by ``_checked_record``)."""
    try:
        return np.array([label_of.get(c, 0) for c in categories], np.int64)
    except TypeError:
        return np.array([label_of.get(c, 0) if isinstance(c, Hashable) else -1 for c in categories], np.int64)


def _box_trouble(boxes: np.ndarray, widths: np.ndarray, heights: np.ndarray) -> np.ndarray:
    """(A,) whether ``clean_boxes`` would report the box: not finite, no area, or not inside."""
    x1, y1, x2, y2 = boxes.T
    with np.errstate(invalid="ignore"):
        return (~np.isfinite(boxes).all(axis=1) | (x2 <= x1) | (y2 <= y1)
                | (x1 < 0) | (y1 < 0) | (x2 > widths) | (y2 > heights))


def _regular_files(folder: Path) -> set[str]:
    """Names of the regular files (not links) directly in ``folder``: one directory read instead of
    one ``stat`` per image. Such a name exists and cannot lead out of the folder (names starting
    with a backslash are left to ``safe_join``, which refuses them)."""
    try:
        with os.scandir(folder) as entries:
            return {entry.name for entry in entries
                    if entry.is_file(follow_symlinks=False) and not entry.name.startswith("\\")}
    except OSError:
        return set()


def _checked_record(coco: CocoFile, image_id: int, image: dict[str, Any], annotations: list[dict[str, Any]],
                    label_of: dict[Any, int], log: ProblemLog, max_pixels: int | None) -> ImageRecord | None:
    """One image, every check made and reported one by one (the path of images with any problem)."""
    path = safe_join(coco.images_dir, str(image["file_name"]))
    if path is None:
        report(log, "unsafe_path", coco.path, f"file_name '{image['file_name']}'")    # as written, not repr
        return None
    boxes, labels, ignore = [], [], []
    for annotation in annotations:
        bbox, category = annotation.get("bbox"), annotation.get("category_id")
        if not _is_bbox(bbox):
            report(log, "bad_annotation", coco.path, f"annotation {annotation.get('id')}: bbox {bbox!r:.60}")
            continue
        if not isinstance(category, Hashable) or category not in label_of:   # a list as id: reported
            report(log, "unknown_label", coco.path, f"annotation {annotation.get('id')}: category {category!r}")
            continue
        x, y, w, h = (float(v) for v in bbox)
        boxes.append([x, y, x + w, y + h])
        labels.append(label_of[category])
        ignore.append(bool(annotation.get("iscrowd", 0)))
    declared = (_int_or_none(image.get("width")), _int_or_none(image.get("height")))
    return make_record(path, declared if all(declared) else None, np.array(boxes, np.float32),
                       np.array(labels, np.int64), np.array(ignore, bool), log, image_id, coco.path,
                       max_pixels)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _int_or_none(value: Any) -> int | None:
    """A positive whole size as written; None for anything else (Infinity and NaN included)."""
    if not _is_number(value) or isinstance(value, float) and not math.isfinite(value) or value <= 0:
        return None
    return int(value)


def coco_sources(cfg) -> dict[str, tuple[Path, Path]]:
    """split -> (json, images folder), from explicit keys or a Roboflow export folder."""
    sources = {}
    for split in ("train", "val", "test"):
        json_path, images = cfg[f"{split}_json"], cfg[f"{split}_images"]
        if json_path:
            sources[split] = (Path(json_path), Path(images) if images else Path(json_path).parent)
    if not sources and cfg.root:
        root = Path(cfg.root)
        if not root.is_dir():
            raise DatasetError(f"dataset.root {root}: folder not found")
        for split, folder in ROBOFLOW_SPLITS.items():
            if (root / folder / ROBOFLOW_JSON).is_file():
                sources[split] = (root / folder / ROBOFLOW_JSON, root / folder)
        if not sources:
            raise DatasetError(f"dataset.root {root}: no {{train,valid,test}}/{ROBOFLOW_JSON} found; "
                               "or set dataset.train_json and dataset.train_images")
    if not sources:
        raise DatasetError("dataset=coco needs dataset.train_json + dataset.train_images (and val_*), "
                           "or dataset.root=<Roboflow export folder>")
    return sources
