"""The checks every reader applies to its boxes, with one policy per problem (see POLICIES)."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..records import ProblemLog

POLICIES = {
    "non_finite_box": "dropped the box",
    "zero_size_box": "dropped the box",
    "box_outside_image": "clipped to the image; dropped when nothing was left",
    "unknown_label": "dropped the box",
    "unnormalised_labels": "dropped the file's boxes (divide by the image's width and height)",
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


def clean_boxes(boxes: np.ndarray, width: float, height: float, file: str | Path, log: ProblemLog,
                unit: str = "px", min_side: float = 0.0) -> np.ndarray:
    """Indices of the boxes to keep, after clipping ``boxes`` in place.

    boxes: (N, 4) float32 xyxy pixels; width/height: the decoded image size. YOLO's boxes are
    checked as fractions (width = height = 1, ``unit`` says so in the details), with ``min_side``
    1e-6: a narrower box would have no area once in float32 pixels.
    """
    keep = np.isfinite(boxes).all(axis=1)
    for i in np.flatnonzero(~keep):
        report(log, "non_finite_box", file, f"box {i}: {boxes[i].tolist()}")
    boxes[~keep] = 0
    sides = boxes[:, 2:] - boxes[:, :2]
    degenerate = keep & (sides <= min_side).any(axis=1)
    for i in np.flatnonzero(degenerate):
        report(log, "zero_size_box", file, f"box {i} is {sides[i, 0]:g}x{sides[i, 1]:g} {unit}")
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
                annotation_file: str | Path | None = None, max_pixels: int | None = None):
    """An ImageRecord after every check, or None when the image itself cannot be used.

    declared_size: (width, height) the annotation states, if any. boxes (N, 4) xyxy float,
    labels (N,) int64 in 1..C, ignore (N,) bool. max_pixels: dataset.max_image_pixels (None: its default).

    A declared size (both sides positive, within max_pixels) is taken as the decoded (upright)
    size without opening the image, so that loading 100k images takes seconds and no DDP rank
    reads every header. A wrong one is found at the image's first read (``DetectionDataset``: the
    boxes of an EXIF photo labelled on its stored pixels, as LabelImg writes them, are turned
    there; anything else stops with the file named) and by ``rcnn data check``, which reads every
    header. Without a usable declared size the header is read here. The file's existence is
    always checked.
    """
    from ..records import ImageRecord

    where = annotation_file or path
    if not path.is_file():
        report(log, "missing_image", where, f"{path} does not exist")
        return None
    if trusted_size(declared_size, max_pixels):
        width, height = (int(v) for v in declared_size)
    else:
        read = _size_from_header(path, declared_size, boxes, log, where, max_pixels)
        if read is None:
            return None
        width, height, boxes = read
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4).copy()
    keep = clean_boxes(boxes, width, height, where, log)
    return ImageRecord(path, width, height, boxes[keep], np.asarray(labels, np.int64)[keep],
                       np.asarray(ignore, bool)[keep], source_id)


def trusted_size(declared_size: tuple[int, int] | None, max_pixels: int | None = None) -> bool:
    """Whether a declared (width, height) is taken without reading the image: both sides positive
    and the area within max_pixels. A larger one is left to the header, which refuses a really
    oversized image and corrects a wrong declaration (``size_mismatch``)."""
    from ..images import default_max_pixels

    if not declared_size or not all(isinstance(v, int) and v > 0 for v in declared_size):
        return False
    return declared_size[0] * declared_size[1] <= (max_pixels or default_max_pixels())


def _size_from_header(path: Path, declared_size: tuple[int, int] | None, boxes: np.ndarray, log: ProblemLog,
                      where: str | Path, max_pixels: int | None) -> tuple[int, int, np.ndarray] | None:
    """(width, height, boxes) from the image header, the boxes turned when the declared size is the
    stored size of an EXIF-rotated photo; None (reported) when the header cannot be read."""
    from ..images import SWAPS_SIDES, ImageReadError, image_header, upright_boxes

    try:
        stored_width, stored_height, orientation = image_header(path, max_pixels)
    except ImageReadError as err:
        report(log, "unreadable_image", path, str(err).split(": ", 1)[-1])
        return None
    turned = orientation in SWAPS_SIDES
    width, height = (stored_height, stored_width) if turned else (stored_width, stored_height)
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
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
    return width, height, boxes
