"""``evaluate(predictions, targets, class_names)`` -> EvalReport: every number ``rcnn eval``
prints or writes, the per-class threshold file, and the plots."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .coco import coco_metrics, summary_keys
from .matching import as_numpy, pairwise_iou
from .voc import ClassCurve, ap_11_point, ap_all_points, best_f1_threshold, class_curves


@dataclass
class EvalReport:
    """Inputs as for ``evaluate``; ``coco`` holds the COCO stats, ``curves`` the VOC curves."""

    class_names: list[str]
    coco: dict[str, Any]
    curves: list[ClassCurve]
    predictions: list[dict]
    targets: list[dict]
    max_detections: int = 100

    def summary(self) -> dict[str, Any]:
        """The JSON ``rcnn eval --json`` writes: plain floats, -1 where undefined (as COCO does). The
        recall keys are mar_1, mar_10 and mar_<max_detections> (mar_100 by default)."""
        voc07 = [ap_11_point(c) for c in self.curves]
        voc = [ap_all_points(c) for c in self.curves]
        out = {key: self.coco[key] for key in summary_keys(self.max_detections)}
        out["voc07_map50"] = _mean(voc07)
        out["voc_map50"] = _mean(voc)
        out["per_class"] = {
            name: {"ap": _defined(self.coco["per_class_ap"][i]), "ap50": _defined(self.coco["per_class_ap50"][i]),
                   "voc07_ap50": _defined(voc07[i]), "voc_ap50": _defined(voc[i]),
                   "ground_truth": self.curves[i].num_positives}
            for i, name in enumerate(self.class_names)}
        return out

    def thresholds(self) -> dict[str, float]:
        """Per class, the score threshold that maximises F1 on the evaluated set."""
        return {name: round(best_f1_threshold(curve)[0], 4) for name, curve in zip(self.class_names, self.curves)}

    def table(self):
        from rich.markup import escape
        from rich.table import Table

        # class names come from the data: printed as text, not parsed as markup
        table = Table(title="per-class AP", title_justify="left")
        for column in ("class", "boxes", "AP", "AP50", "VOC07 AP50", "best-F1 score"):
            table.add_column(column, justify="left" if column == "class" else "right")
        summary, thresholds = self.summary()["per_class"], self.thresholds()
        for name in self.class_names:
            row = summary[name]
            table.add_row(escape(name), str(row["ground_truth"]), f"{row['ap']:.4f}", f"{row['ap50']:.4f}",
                          f"{row['voc07_ap50']:.4f}", f"{thresholds[name]:.3f}")
        return table

    def save_plots(self, out_dir: Path, score_threshold: float = 0.5) -> list[Path]:
        from .plots import plot_confusion_matrix, plot_pr_curve

        out_dir.mkdir(parents=True, exist_ok=True)
        written = [plot_pr_curve(curve, name, out_dir / f"pr_{_file_safe(name)}.png")
                   for name, curve in zip(self.class_names, self.curves)]
        matrix = confusion_matrix(self.predictions, self.targets, len(self.class_names), score_threshold)
        written.append(plot_confusion_matrix(matrix, self.class_names, out_dir / "confusion_matrix.png"))
        return written


def evaluate(predictions: list[dict], targets: list[dict], class_names: list[str],
             max_detections: int = 100) -> EvalReport:
    """predictions: per image {"boxes": (N, 4) xyxy, "scores": (N,), "labels": (N,) in 1..C};
    targets: per image {"boxes": (M, 4), "labels": (M,), optional "ignore": (M,) bool};
    max_detections: the detections per image COCO AP/AR count (the model's ``box_detections_per_img``;
    VOC AP counts them all)."""
    if len(predictions) != len(targets):
        raise ValueError(f"{len(predictions)} predictions for {len(targets)} images")
    num_classes = len(class_names)
    return EvalReport(list(class_names), coco_metrics(predictions, targets, num_classes, max_detections),
                      class_curves(predictions, targets, num_classes), predictions, targets, max_detections)


def confusion_matrix(predictions: list[dict], targets: list[dict], num_classes: int,
                     score_threshold: float = 0.5, iou_threshold: float = 0.5) -> np.ndarray:
    """(C + 1, C + 1) counts; row = true class (last row: background, i.e. false alarms), column =
    predicted class (last column: missed). Each box pairs with its best-overlapping detection."""
    matrix = np.zeros((num_classes + 1, num_classes + 1), np.int64)
    for prediction, target in zip(predictions, targets):
        keep = as_numpy(prediction["scores"]) >= score_threshold
        p_boxes, p_labels = as_numpy(prediction["boxes"]).reshape(-1, 4)[keep], as_numpy(prediction["labels"])[keep]
        g_boxes, g_labels = as_numpy(target["boxes"]).reshape(-1, 4), as_numpy(target["labels"])
        used = np.zeros(len(p_boxes), bool)
        if len(g_boxes) and len(p_boxes):
            iou = pairwise_iou(g_boxes, p_boxes)
            for g in np.argsort(-iou.max(axis=1)):
                candidates = np.where(~used & (iou[g] >= iou_threshold))[0]
                if len(candidates):
                    d = candidates[np.argmax(iou[g, candidates])]
                    used[d] = True
                    matrix[g_labels[g] - 1, p_labels[d] - 1] += 1
                else:
                    matrix[g_labels[g] - 1, num_classes] += 1
        else:
            for label in g_labels:
                matrix[label - 1, num_classes] += 1
        for label in p_labels[~used]:
            matrix[num_classes, label - 1] += 1
    return matrix


def coco_results(predictions: list[dict], image_ids: list[Any], category_ids: list[int]) -> list[dict]:
    """COCO results JSON entries with the dataset's own category ids (label i -> category_ids[i-1])
    and xywh boxes."""
    results = []
    for prediction, image_id in zip(predictions, image_ids):
        boxes = as_numpy(prediction["boxes"]).reshape(-1, 4).astype(float)
        scores, labels = as_numpy(prediction["scores"]), as_numpy(prediction["labels"])
        for (x1, y1, x2, y2), score, label in zip(boxes, scores, labels):
            results.append({"image_id": image_id, "category_id": int(category_ids[int(label) - 1]),
                            "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                            "score": round(float(score), 5)})
    return results


def _mean(values: list[float]) -> float:
    defined = [v for v in values if not math.isnan(v)]
    return float(np.mean(defined)) if defined else -1.0


def _defined(value: float) -> float:
    return -1.0 if value is None or math.isnan(value) else float(value)


def _file_safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)


