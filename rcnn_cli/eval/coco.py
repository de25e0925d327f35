"""COCO metrics with faster-coco-eval's COCO/COCOeval called directly (the same numbers as
pycocotools, several times faster on large sets than through torchmetrics, which also re-evaluates
every class on its own): AP@[.5:.95], AP50, AP75, APs/m/l, AR@1/10/max detections, per class.

Boxes marked ``ignore`` (VOC difficult, COCO crowd) are passed as ``iscrowd``: see voc.py for how that
differs from the devkit's handling of difficult boxes."""

from __future__ import annotations

import contextlib
import io
from typing import Any

import numpy as np

from .matching import as_numpy

AP_KEYS = ("map", "map_50", "map_75", "map_small", "map_medium", "map_large")


def max_detection_thresholds(max_detections: int) -> list[int]:
    """COCO's (1, 10, 100) with 100 replaced by ``max_detections``: AP and the last AR count each
    image's best ``max_detections`` detections (COCO takes the third value for AP, so below 10 it
    must be the third too)."""
    if max_detections < 1:
        raise ValueError(f"max_detections must be at least 1, got {max_detections}")
    return [1, min(10, max_detections), max_detections]


def summary_keys(max_detections: int = 100) -> tuple[str, ...]:
    """The summary's keys: AP_KEYS, then mar_1, mar_10 and mar_<max_detections> (each once)."""
    return AP_KEYS + tuple(dict.fromkeys(f"mar_{n}" for n in max_detection_thresholds(max_detections)))


def coco_metrics(predictions: list[dict], targets: list[dict], num_classes: int,
                 max_detections: int = 100) -> dict[str, Any]:
    """Summary stats (``summary_keys``; floats, -1 where undefined) plus ``per_class_ap`` and
    ``per_class_ap50`` (lists over labels 1..num_classes, nan for classes absent from both).

    max_detections: detections per image that AP and AR count, best first; pass the model's
    ``box_detections_per_img`` so that a crowded image is not cut at COCO's 100.
    """
    from faster_coco_eval import COCO, COCOeval_faster

    thresholds = max_detection_thresholds(max_detections)
    images, annotations = [], []
    detections = []
    for image_id, (prediction, target) in enumerate(zip(predictions, targets)):
        images.append({"id": image_id})
        boxes = as_numpy(target["boxes"]).reshape(-1, 4).astype(np.float64)
        labels = as_numpy(target["labels"]).reshape(-1).astype(np.int64)
        ignore = target.get("ignore")
        crowd = as_numpy(ignore).reshape(-1).astype(bool) if ignore is not None else np.zeros(len(labels), bool)
        for (x1, y1, x2, y2), label, is_crowd in zip(boxes.tolist(), labels.tolist(), crowd.tolist()):
            w, h = x2 - x1, y2 - y1
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": label,
                                "bbox": [x1, y1, w, h], "area": w * h, "iscrowd": int(is_crowd)})
        p_boxes = as_numpy(prediction["boxes"]).reshape(-1, 4).astype(np.float64)
        if len(p_boxes):
            # (image id, x, y, w, h, score, class) rows: loadRes' array form, no dict per detection
            detections.append(np.column_stack([
                np.full(len(p_boxes), image_id), p_boxes[:, :2], p_boxes[:, 2:] - p_boxes[:, :2],
                as_numpy(prediction["scores"]).reshape(-1), as_numpy(prediction["labels"]).reshape(-1)]))
    detected = np.concatenate(detections) if detections else np.zeros((0, 7))
    classes = sorted({a["category_id"] for a in annotations} | set(detected[:, 6].astype(int).tolist()))
    summary = dict.fromkeys(summary_keys(max_detections), -1.0)
    per_ap = np.full(num_classes, np.nan)
    per_ap50 = np.full(num_classes, np.nan)
    if classes and images:
        with contextlib.redirect_stdout(io.StringIO()):
            truth = COCO()
            truth.dataset = {"images": images, "annotations": annotations,
                             "categories": [{"id": c, "name": str(c)} for c in classes]}
            truth.createIndex()
            found = truth.loadRes(detected if len(detected) else [])
            evaluator = COCOeval_faster(truth, found, iouType="bbox", print_function=lambda *args: None)
            evaluator.params.maxDets = thresholds
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        stats = evaluator.stats
        for index, key in enumerate(AP_KEYS + tuple(f"mar_{n}" for n in thresholds)):
            summary[key] = float(stats[index])
        # precision: (iou thresholds, recall points, classes, area ranges, max dets); -1 = undefined.
        # A class's AP is COCO's AP with catIds=[class] (area all, the last max dets).
        precision = np.asarray(evaluator.eval["precision"])
        for k, label in enumerate(evaluator.params.catIds):
            if 1 <= label <= num_classes:
                curve = precision[:, :, k, 0, -1]
                per_ap[label - 1] = curve[curve > -1].mean() if (curve > -1).any() else np.nan
                curve50 = precision[0, :, k, 0, -1]
                per_ap50[label - 1] = curve50[curve50 > -1].mean() if (curve50 > -1).any() else np.nan
    summary["per_class_ap"] = per_ap.tolist()
    summary["per_class_ap50"] = per_ap50.tolist()
    return summary
