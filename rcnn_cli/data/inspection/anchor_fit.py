"""Do the anchors fit the boxes? The training boxes as the model sees them (after its resize) against
the anchor shapes (``model.anchor_sizes`` per level x ``model.aspect_ratios``); numpy only.

Shapes only, as is usual for this statistic: each box is compared with every anchor centred on the same
point, so the IoU depends on widths and heights alone. The RPN's anchors sit on a grid of the level's
stride, so this is the best case: a box no anchor matches here is matched by none in training either.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..records import ImageRecord

IOU = 0.5           # an anchor this close to a box's shape can become a positive for it (RPN fg is 0.7)
MAX_UNMATCHED = 0.05
# Factors tried for a suggestion, nearest to 1 first: anchor sizes times f, or images (min_size) times f.
FACTORS = (0.75, 1.5, 0.5, 2.0, 0.375, 3.0, 0.25, 4.0)


def anchor_shapes(anchor_sizes: Sequence[Sequence[float]], aspect_ratios: Sequence[float]) -> np.ndarray:
    """(K, 2) anchor widths and heights of every level, rounded as ``model.anchors.AnchorGenerator``
    rounds them (half-extents to whole pixels); ratio = height / width."""
    shapes = []
    for sizes in anchor_sizes:
        for ratio in aspect_ratios:
            for size in sizes:
                h_ratio = math.sqrt(ratio)
                shapes.append((2 * np.round(size / h_ratio / 2), 2 * np.round(size * h_ratio / 2)))
    return np.array(shapes, np.float64).reshape(-1, 2)


def resize_scale(width: int, height: int, min_size: int | Sequence[int], max_size: int) -> tuple[float, float]:
    """(x, y) factors of the model's resize (``model.transform``: short side to min_size, long side at
    most max_size, sizes floored); the last min_size of a list, as at evaluation."""
    short = float(min_size[-1] if isinstance(min_size, Sequence) else min_size)
    scale = min(short / min(width, height), max_size / max(width, height))
    return math.floor(width * scale) / width, math.floor(height * scale) / height


def box_shapes(records: Sequence[ImageRecord], min_size, max_size: int, use_ignored: bool = False
               ) -> tuple[np.ndarray, np.ndarray]:
    """(N, 2) widths and heights of the trained-on boxes after the resize, and their (N,) labels."""
    shapes, labels = [np.zeros((0, 2))], [np.zeros(0, np.int64)]
    for record in records:
        keep = np.ones(record.num_boxes, bool) if use_ignored else ~record.ignore
        sx, sy = resize_scale(record.width, record.height, min_size, max_size)
        boxes = record.boxes[keep].astype(np.float64)
        shapes.append(np.stack([(boxes[:, 2] - boxes[:, 0]) * sx, (boxes[:, 3] - boxes[:, 1]) * sy], axis=1))
        labels.append(record.labels[keep])
    return np.concatenate(shapes), np.concatenate(labels)


def best_iou(boxes: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """(N,) the best IoU of each (w, h) box with any (w, h) anchor, both centred at the same point."""
    inter = np.minimum(boxes[:, None, 0], anchors[None, :, 0]) * np.minimum(boxes[:, None, 1], anchors[None, :, 1])
    union = (boxes[:, 0] * boxes[:, 1])[:, None] + (anchors[:, 0] * anchors[:, 1])[None, :] - inter
    return (inter / np.maximum(union, 1e-12)).max(axis=1, initial=0.0)


def unmatched(records: Sequence[ImageRecord], class_names: Sequence[str], min_size, max_size: int,
              anchor_sizes, aspect_ratios, use_ignored: bool = False) -> dict[str, dict[str, Any]]:
    """Per class: its boxes, how many no anchor matches at IoU >= ``IOU``, and that share."""
    shapes, labels = box_shapes(records, min_size, max_size, use_ignored)
    missed = best_iou(shapes, anchor_shapes(anchor_sizes, aspect_ratios)) < IOU
    result = {}
    for i, name in enumerate(class_names):
        mine = labels == i + 1
        count, miss = int(mine.sum()), int(missed[mine].sum())
        result[name] = {"boxes": count, "unmatched": miss, "share": round(miss / count, 4) if count else 0.0}
    return result


def anchor_fit(records: Sequence[ImageRecord], class_names: Sequence[str], model, use_ignored: bool = False
               ) -> dict[str, Any]:
    """The report: the settings compared, per class the unmatched share, and when a class is above
    ``MAX_UNMATCHED``, the settings (overrides) that bring every class under it.

    model: the ``model`` config (min_size, max_size, anchor_sizes, aspect_ratios).
    """
    min_size = _plain(model["min_size"])
    max_size, sizes, ratios = int(model["max_size"]), _plain(model["anchor_sizes"]), _plain(model["aspect_ratios"])
    classes = unmatched(records, class_names, min_size, max_size, sizes, ratios, use_ignored)
    report = {"min_size": min_size, "max_size": max_size, "anchor_sizes": sizes, "aspect_ratios": ratios, "iou": IOU,
              "classes": classes, "suggestions": []}
    if _worst(classes) > MAX_UNMATCHED:
        report["suggestions"] = suggest(records, class_names, min_size, max_size, sizes, ratios, use_ignored)
    return report


def suggest(records, class_names, min_size, max_size: int, sizes, ratios, use_ignored: bool = False
            ) -> list[dict[str, Any]]:
    """Up to two fixes, each the first factor of ``FACTORS`` that brings every class under
    ``MAX_UNMATCHED``: anchor sizes scaled (same anchors per level, as the RPN head needs), and images
    scaled (min_size, with max_size raised when it would cap the larger resize)."""
    found = []
    for factor in FACTORS:
        scaled = [[max(1, round(s * factor)) for s in level] for level in sizes]
        worst = _worst(unmatched(records, class_names, min_size, max_size, scaled, ratios, use_ignored))
        if worst <= MAX_UNMATCHED:
            found.append({"overrides": [f"model.anchor_sizes={_text(scaled)}"], "worst_share": worst})
            break
    # The long side the largest image would need for the short side to reach min_size.
    aspect = max((max(r.width, r.height) / min(r.width, r.height) for r in records), default=1.0)
    for factor in FACTORS:
        new_min = ([_round16(m * factor) for m in min_size] if isinstance(min_size, list)
                   else _round16(min_size * factor))
        needed = math.ceil((new_min[-1] if isinstance(new_min, list) else new_min) * aspect / 16) * 16
        new_max = needed if needed > max_size and factor > 1 else max_size
        worst = _worst(unmatched(records, class_names, new_min, new_max, sizes, ratios, use_ignored))
        if worst <= MAX_UNMATCHED:
            overrides = [f"model.min_size={_text(new_min)}"]
            if new_max != max_size:
                overrides.append(f"model.max_size={new_max}")
            found.append({"overrides": overrides, "worst_share": worst})
            break
    return found


def _worst(classes: dict[str, dict[str, Any]]) -> float:
    return max((c["share"] for c in classes.values()), default=0.0)


def _round16(value: float) -> int:
    return max(16, int(round(value / 16)) * 16)


def _plain(value):
    """Config lists (ListConfig) -> Python lists of numbers."""
    if isinstance(value, (int, float)):
        return value
    return [_plain(v) for v in value]


def _text(value) -> str:
    return str(value).replace(" ", "")
