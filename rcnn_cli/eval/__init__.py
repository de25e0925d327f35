"""Detection metrics: COCO (faster-coco-eval), VOC07/VOC AP50 (ours), thresholds and plots."""

from .report import EvalReport, coco_results, confusion_matrix, evaluate

__all__ = ["EvalReport", "coco_results", "confusion_matrix", "evaluate"]
