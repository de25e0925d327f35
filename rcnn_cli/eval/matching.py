"""Small numpy helpers shared by the metrics."""

from __future__ import annotations

from typing import Any

import numpy as np

# A detection matches a box at this IoU (VOC's rule); below it but at NEAR_IOU it is near the box
# (right object, wrong box: report.html's mislocalised, label issues' badly_located).
MATCH_IOU, NEAR_IOU = 0.5, 0.1


def as_numpy(value: Any) -> np.ndarray:
    """Tensor (any device) or array-like -> numpy array."""
    if hasattr(value, "detach"):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def pairwise_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, M) IoU of boxes a: (N, 4) and b: (M, 4), xyxy, continuous coordinates."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(bottom_right - top_left, 0, None).prod(axis=2)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-12)
