"""COCO instances JSON (any tool's export, Roboflow's ``_annotations.coco.json`` folders included).

Category ids may start at 0 or have gaps: they map to contiguous labels 1..C (0 is background)
and ``LoadedDataset.category_ids`` maps them back when results are written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DatasetError
from .records import ImageRecord, ProblemLog
from .sanitize import make_record, report, safe_join

ROBOFLOW_JSON = "_annotations.coco.json"
ROBOFLOW_SPLITS = {"train": "train", "val": "valid", "test": "test"}


@dataclass
class CocoFile:
    """One parsed COCO file: categories {id: name}, images {id: info}, annotations per image id."""

    path: Path
    images_dir: Path
    categories: dict[int, str]
    images: dict[int, dict[str, Any]]
    annotations: dict[int, list[dict[str, Any]]]


def read_json(path: Path) -> Any:
    if not path.is_file():
        raise DatasetError(f"{path}: annotation file not found; check the dataset path")
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
        except (KeyError, TypeError, ValueError):
            report(log, "bad_annotation", path, f"category entry {category!r:.80}")
    images: dict[int, dict[str, Any]] = {}
    for image in data["images"]:
        try:
            image_id = int(image["id"])
            str(image["file_name"])
        except (KeyError, TypeError, ValueError):
            report(log, "bad_annotation", path, f"image entry {image!r:.80}")
            continue
        if image_id in images:
            report(log, "duplicate_image_id", path, f"image id {image_id}")
            continue
        images[image_id] = image
    annotations: dict[int, list[dict[str, Any]]] = {}
    for annotation in data.get("annotations") or []:
        if not isinstance(annotation, dict) or annotation.get("image_id") not in images:
            report(log, "bad_annotation", path, f"annotation for unknown image {_get(annotation, 'image_id')!r:.40}")
            continue
        annotations.setdefault(annotation["image_id"], []).append(annotation)
    return CocoFile(path, images_dir, categories, images, annotations)


def _get(item: Any, key: str) -> Any:
    return item.get(key) if isinstance(item, dict) else None


def category_table(files: list[CocoFile], class_names: list[str] | None, log: ProblemLog, notes: list[str]
                   ) -> tuple[list[str], list[int]]:
    """(class names, their category ids), label i = position i-1. Categories no annotation uses
    (Roboflow's placeholder superclass) are dropped unless the config names them."""
    names: dict[int, str] = {}
    for coco in files:
        names.update(coco.categories)
    used = {a.get("category_id") for coco in files for anns in coco.annotations.values() for a in anns}
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


def coco_records(coco: CocoFile, category_ids: list[int], log: ProblemLog, max_pixels: int | None = None
                 ) -> list[ImageRecord]:
    """Records of one file; images[].width/height, when given, are trusted without opening the image
    (see ``sanitize.make_record``); images without them are opened for their size."""
    label_of = {cid: i + 1 for i, cid in enumerate(category_ids)}
    records = []
    for image_id, image in coco.images.items():
        path = safe_join(coco.images_dir, str(image["file_name"]))
        if path is None:
            report(log, "unsafe_path", coco.path, f"file_name {image['file_name']!r}")
            continue
        boxes, labels, ignore = [], [], []
        for annotation in coco.annotations.get(image_id, []):
            bbox, category = annotation.get("bbox"), annotation.get("category_id")
            if not isinstance(bbox, list) or len(bbox) != 4 or not all(_is_number(v) for v in bbox):
                report(log, "bad_annotation", coco.path, f"annotation {annotation.get('id')}: bbox {bbox!r:.60}")
                continue
            if category not in label_of:
                report(log, "unknown_label", coco.path, f"annotation {annotation.get('id')}: category {category!r}")
                continue
            x, y, w, h = (float(v) for v in bbox)
            boxes.append([x, y, x + w, y + h])
            labels.append(label_of[category])
            ignore.append(bool(annotation.get("iscrowd", 0)))
        declared = (_int_or_none(image.get("width")), _int_or_none(image.get("height")))
        record = make_record(path, declared if all(declared) else None, np.array(boxes, np.float32),
                             np.array(labels, np.int64), np.array(ignore, bool), log, image_id, coco.path,
                             max_pixels, trust_declared=True)
        if record is not None:
            records.append(record)
    return records


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _int_or_none(value: Any) -> int | None:
    return int(value) if _is_number(value) and value > 0 else None


def coco_sources(cfg) -> dict[str, tuple[Path, Path]]:
    """split -> (json, images folder), from explicit keys or a Roboflow export folder."""
    sources = {}
    for split in ("train", "val", "test"):
        json_path, images = cfg.get(f"{split}_json"), cfg.get(f"{split}_images")
        if json_path:
            sources[split] = (Path(json_path), Path(images) if images else Path(json_path).parent)
    if not sources and cfg.get("root"):
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
