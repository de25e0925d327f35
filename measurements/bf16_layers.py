"""Issue 28 item 4: which layers' bf16 rounding breaks agreement with the exact model? The bf16 path with single
parts kept in fp32 (the RPN objectness 1x1 conv, the RPN box-delta conv, the whole RPN head, the box head), each
scored as ``rcnn predict --precision auto`` scores bf16: mAP50 of its detections against the exact fp32 model's on
the same pictures (eval/agreement.py), and speed against the exact model.
Run: .venv/bin/python measurements/bf16_layers.py WEIGHTS IMAGE_FOLDER [--count 12]"""

import argparse
import copy
from pathlib import Path

import torch
from torch import nn

from rcnn_cli.api import Detector
from rcnn_cli.data.images import read_chw
from rcnn_cli.inference.fast import Bfloat16, Float32, optimize_for_inference, to_bfloat16
from rcnn_cli.inference.precision import measure


def keep_fp32(model: nn.Module, part: str) -> nn.Module:
    """The bf16 path of ``model`` (a folded copy) with every heavy layer in bf16 (as before the RPN's box-delta
    conv was kept in fp32), then ``part`` back in fp32; "as shipped": to_bfloat16 as it is."""
    head = model.rpn.head
    if part == "as shipped":
        return model
    head.bbox_pred = Bfloat16(head.bbox_pred.module)
    if part == "rpn objectness":
        head.cls_logits = Float32(head.cls_logits.module)
    elif part == "rpn deltas":
        head.bbox_pred = Float32(head.bbox_pred.module)
    elif part == "rpn objectness + deltas":
        head.cls_logits = Float32(head.cls_logits.module)
        head.bbox_pred = Float32(head.bbox_pred.module)
    elif part == "box head":
        model.roi_heads.box_head = Float32(model.roi_heads.box_head.module)
    elif part == "rpn head (all)":
        head.conv = Float32(head.conv.module)
        head.cls_logits = Float32(head.cls_logits.module)
        head.bbox_pred = Float32(head.bbox_pred.module)
    elif part != "none":
        raise ValueError(part)
    return model


PARTS = ("as shipped", "none", "rpn objectness", "rpn deltas", "rpn objectness + deltas", "rpn head (all)", "box head")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("weights")
    parser.add_argument("images")
    parser.add_argument("--count", type=int, default=12)
    args = parser.parse_args()
    detector = Detector.load(args.weights, precision="fp32", device="cpu")
    exact = detector.model.eval()
    images = [read_chw(path) for path in sorted(Path(args.images).glob("*.jpg"))[:args.count]]
    classes, floor = len(detector.class_names), float(detector.config["box_score_thresh"])
    print(f"{args.weights}: {len(images)} pictures, score floor {floor}")
    with torch.inference_mode():
        for part in PARTS:
            reduced = keep_fp32(to_bfloat16(optimize_for_inference(copy.deepcopy(exact))), part)
            trial = measure(lambda batch: exact(batch), lambda batch, m=reduced: m(batch), images, classes, floor,
                            "measurement")
            print(f"bf16, {part} in fp32: agreement mAP50 {trial.agreement:.3f} over {trial.compared} detections, "
                  f"{trial.speedup:.2f}x the exact model")


if __name__ == "__main__":
    main()
