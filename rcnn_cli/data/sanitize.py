"""The checks every reader applies to its boxes, with one policy per problem (see POLICIES)."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np

from .records import ProblemLog

POLICIES = {
    "non_finite_box": "dropped the box",
    "zero_size_box": "dropped the box",
    "box_outside_image": "clipped to the image; dropped when nothing was left",
    "unknown_label": "dropped the box",
    "missing_image": "skipped the image",
    "unreadable_image": "skipped the image",
    "size_mismatch": "kept the file's size and clipped the boxes to it",
    "unrotated_annotation": "turned the boxes with the EXIF-rotated image",
    "wrong_declared_size": "training stops at this image: correct the annotation's width/height",
    "duplicate_image_id": "kept the first image with that id",
    "unsafe_path": "refused (the path leaves the image folder)",
    "malformed_annotation": "skipped the file",
    "bad_annotation": "dropped the annotation",
    "empty_image": "kept as a negative (dataset.keep_empty=true)",
    "empty_image_dropped": "skipped (dataset.keep_empty=false)",
    "unlabelled_image": "kept as a negative",
}


def report(log: ProblemLog, kind: str, file: str | Path, detail: str = "") -> None:
    log.add(kind, file, detail, POLICIES.get(kind, ""))


def clean_boxes(boxes: np.ndarray, width: int, height: int, file: str | Path, log: ProblemLog) -> np.ndarray:
    """Indices of the boxes to keep, after clipping ``boxes`` in place.

    boxes: (N, 4) float32 xyxy pixels; width/height: the decoded image size.
    """
    keep = np.isfinite(boxes).all(axis=1)
    for i in np.flatnonzero(~keep):
        report(log, "non_finite_box", file, f"box {i}: {boxes[i].tolist()}")
    boxes[~keep] = 0
    degenerate = keep & ((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1]))
    for i in np.flatnonzero(degenerate):
        w, h = boxes[i, 2] - boxes[i, 0], boxes[i, 3] - boxes[i, 1]
        report(log, "zero_size_box", file, f"box {i} is {w:g}x{h:g} px")
    keep &= ~degenerate
    outside = keep & ((boxes[:, 0] < 0) | (boxes[:, 1] < 0) | (boxes[:, 2] > width) | (boxes[:, 3] > height))
    if outside.any():
        np.clip(boxes[:, 0::2], 0, width, out=boxes[:, 0::2])
        np.clip(boxes[:, 1::2], 0, height, out=boxes[:, 1::2])
        vanished = outside & ((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1]))
        for i in np.flatnonzero(outside):
            report(log, "box_outside_image", file, f"box {i}" + (" (nothing left)" if vanished[i] else ""))
        keep &= ~vanished
    return np.flatnonzero(keep)


def safe_join(folder: Path, name: str) -> Path | None:
    """``folder / name`` (resolved) unless ``name`` is absolute or climbs out of ``folder``, directly
    or through a symbolic link (then None). String-level os.path calls: this runs once per image."""
    if not name or Path(name).is_absolute() or name.startswith(("/", "\\")):
        return None
    root = _resolved(str(folder))
    path = os.path.realpath(os.path.join(root, name))
    if path != root and not path.startswith(root.rstrip(os.sep) + os.sep):
        return None
    return Path(path)


@lru_cache(maxsize=64)
def _resolved(folder: str) -> str:
    return os.path.realpath(folder)


def make_record(path: Path, declared_size: tuple[int, int] | None, boxes: np.ndarray, labels: np.ndarray,
                ignore: np.ndarray, log: ProblemLog, source_id: int | str = "",
                annotation_file: str | Path | None = None, max_pixels: int | None = None,
                trust_declared: bool = False):
    """An ImageRecord after every check, or None when the image itself cannot be used.

    declared_size: (width, height) the annotation states, if any. boxes (N, 4) xyxy float,
    labels (N,) int64 in 1..C, ignore (N,) bool. max_pixels: dataset.max_image_pixels (None: its default).

    trust_declared: take ``declared_size`` as the decoded (upright) size without opening the image,
    so that loading 100k images takes seconds. Safe where the format's convention is the size of the
    picture as shown (COCO: CVAT, Roboflow and COCO itself write it); VOC files come from LabelImg,
    which writes the stored size of EXIF-rotated photos, so VOC reads the header to decide. A wrong
    declared size is found at the image's first read (``DetectionDataset``: the boxes of an EXIF
    photo labelled on its stored pixels are turned there, anything else stops with the file named)
    and by ``rcnn data check``, which reads every header. The file's existence is still checked.
    """
    from .images import SWAPS_SIDES, ImageReadError, default_max_pixels, image_header, upright_boxes
    from .records import ImageRecord

    where = annotation_file or path
    if not path.is_file():
        report(log, "missing_image", where, f"{path} does not exist")
        return None
    if trust_declared and declared_size and all(declared_size):
        width, height = (int(v) for v in declared_size)
        limit = max_pixels or default_max_pixels()
        if width * height > limit:
            report(log, "unreadable_image", path, f"{width}x{height} is {width * height:,} pixels (as declared), "
                                                  f"over dataset.max_image_pixels={limit:,}; refusing to decode it "
                                                  "(raise the limit if it is genuine)")
            return None
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4).copy()
        keep = clean_boxes(boxes, width, height, where, log)
        return ImageRecord(path, width, height, boxes[keep], np.asarray(labels, np.int64)[keep],
                           np.asarray(ignore, bool)[keep], source_id)
    try:
        stored_width, stored_height, orientation = image_header(path, max_pixels)
    except ImageReadError as err:
        report(log, "unreadable_image", path, str(err).split(": ", 1)[-1])
        return None
    turned = orientation in SWAPS_SIDES
    width, height = (stored_height, stored_width) if turned else (stored_width, stored_height)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4).copy()
    if declared_size and all(declared_size) and tuple(declared_size) != (width, height):
        if turned and tuple(declared_size) == (stored_width, stored_height):
            # LabelImg and others label the stored pixels, ignoring EXIF; every reader decodes
            # the photo upright, so the boxes turn with it here, once, for all of them.
            boxes = upright_boxes(boxes, orientation, stored_width, stored_height)
            report(log, "unrotated_annotation", where, f"boxes drawn on the stored {stored_width}x{stored_height} "
                                                       f"pixels of {path.name} (EXIF orientation {orientation})")
        else:
            report(log, "size_mismatch", where, f"annotation says {declared_size[0]}x{declared_size[1]}, "
                                                f"{path.name} is {width}x{height}")
    keep = clean_boxes(boxes, width, height, where, log)
    return ImageRecord(path, width, height, boxes[keep], np.asarray(labels, np.int64)[keep],
                       np.asarray(ignore, bool)[keep], source_id)
