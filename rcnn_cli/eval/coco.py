"""COCO metrics through torchmetrics' MeanAveragePrecision (faster_coco_eval backend when
installed, else pycocotools): AP@[.5:.95], AP50, AP75, APs/m/l, AR@1/10/max detections, per class.

Boxes marked ``ignore`` (VOC difficult, COCO crowd) are passed as ``iscrowd``: see voc.py for how that
differs from the devkit's handling of difficult boxes."""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np
import torch

from .matching import as_numpy

AP_KEYS = ("map", "map_50", "map_75", "map_small", "map_medium", "map_large")


def backend() -> str:
    return "faster_coco_eval" if importlib.util.find_spec("faster_coco_eval") else "pycocotools"


def _tensors(item: dict[str, Any], keys: tuple[str, ...]) -> dict[str, torch.Tensor]:
    out = {}
    for key in keys:
        value = torch.as_tensor(as_numpy(item[key]))
        out[key] = value.reshape(-1, 4).float() if key == "boxes" else value
    return out


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
    from torchmetrics.detection import MeanAveragePrecision

    if backend() == "pycocotools" and max_detections != 100:
        # pycocotools' summarize() reads AP at 100 detections whatever maxDets says (-1 when absent).
        raise RuntimeError(f"max_detections={max_detections} needs faster-coco-eval (pip install faster-coco-eval)")
    # sync_on_compute=False: under DDP only rank 0 evaluates the gathered set; a sync would wait forever.
    metric = MeanAveragePrecision(iou_type="bbox", class_metrics=True, extended_summary=True, backend=backend(),
                                  max_detection_thresholds=max_detection_thresholds(max_detections),
                                  sync_on_compute=False)
    preds = [{**_tensors(p, ("boxes", "scores")), "labels": torch.as_tensor(as_numpy(p["labels"])).long()}
             for p in predictions]
    gts = []
    for target in targets:
        labels = torch.as_tensor(as_numpy(target["labels"])).long()
        ignore = target.get("ignore")
        crowd = (torch.as_tensor(as_numpy(ignore)).bool() if ignore is not None
                 else torch.zeros_like(labels, dtype=torch.bool))
        gts.append({"boxes": torch.as_tensor(as_numpy(target["boxes"])).reshape(-1, 4).float(),
                    "labels": labels, "iscrowd": crowd.long()})
    metric.update(preds, gts)
    result = metric.compute()
    summary = {key: float(result[key]) for key in summary_keys(max_detections)}
    per_ap = np.full(num_classes, np.nan)
    per_ap50 = np.full(num_classes, np.nan)
    classes = as_numpy(result["classes"]).reshape(-1).astype(int)
    map_per_class = as_numpy(result["map_per_class"]).reshape(-1)
    # precision: (iou thresholds, recall points, classes, area ranges, max dets); -1 = undefined.
    precision = as_numpy(result["precision"])
    for k, label in enumerate(classes):
        if 1 <= label <= num_classes:
            per_ap[label - 1] = map_per_class[k] if map_per_class[k] >= 0 else np.nan
            curve = precision[0, :, k, 0, -1]
            per_ap50[label - 1] = curve[curve > -1].mean() if (curve > -1).any() else np.nan
    summary["per_class_ap"] = per_ap.tolist()
    summary["per_class_ap50"] = per_ap50.tolist()
    return summary
