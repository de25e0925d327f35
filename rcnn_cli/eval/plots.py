"""Precision-recall curves and the confusion matrix as PNG files (matplotlib, no display)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..files import save_figure
from .voc import ClassCurve, ap_all_points


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: Path) -> Path:
    save_figure(figure, path, dpi=100)
    return path


def plot_pr_curve(curve: ClassCurve, name: str, path: Path) -> Path:
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(4.5, 4))
    if len(curve.recall):
        axis.plot(curve.recall, curve.precision, lw=1.5)
    ap = ap_all_points(curve)
    axis.set_title(f"{name}: AP50 {ap:.3f} ({curve.num_positives} boxes)" if not np.isnan(ap) else f"{name}: no boxes")
    axis.set_xlabel("recall")
    axis.set_ylabel("precision")
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1.02)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    _save(figure, path)
    plt.close(figure)
    return path


def plot_confusion_matrix(matrix: np.ndarray, class_names: list[str], path: Path) -> Path:
    plt = _pyplot()
    labels = [*class_names, "background"]
    size = 2.5 + 0.6 * len(labels)
    figure, axis = plt.subplots(figsize=(size, size * 0.85))
    axis.imshow(matrix, cmap="Blues")
    axis.set_xticks(range(len(labels)), [*class_names, "missed"], rotation=45, ha="right")
    axis.set_yticks(range(len(labels)), labels)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    peak = matrix.max() if matrix.size else 0
    for (row, column), count in np.ndenumerate(matrix):
        axis.text(column, row, str(count), ha="center", va="center",
                  color="white" if count > peak / 2 else "black", fontsize=8)
    axis.set_title("confusion matrix (IoU 0.5, score 0.5)")
    figure.tight_layout()
    _save(figure, path)
    plt.close(figure)
    return path
