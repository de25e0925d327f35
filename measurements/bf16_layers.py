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

PARTS = {  # name -> the layers kept in fp32, with their exact (never bf16-rounded) weights
    "as shipped": None,
    "none (all heavy layers bf16)": (),
    "rpn objectness": ("rpn.head.cls_logits",),
    "rpn deltas": ("rpn.head.bbox_pred",),
    "rpn objectness + deltas": ("rpn.head.cls_logits", "rpn.head.bbox_pred"),
    "rpn head (all)": ("rpn.head.conv", "rpn.head.cls_logits", "rpn.head.bbox_pred"),
    "box head": ("roi_heads.box_head",),
}


def variant(folded: nn.Module, kept: tuple[str, ...] | None) -> nn.Module:
    """The bf16 path built from a copy of ``folded``; ``kept`` None: to_bfloat16 as it is, else every heavy layer
    in bf16 but the named ones, which run in fp32 with the folded model's own weights."""
    model = to_bfloat16(copy.deepcopy(folded))
    if kept is None:
        return model
    model.rpn.head.bbox_pred = Bfloat16(copy.deepcopy(folded.rpn.head.bbox_pred))
    for name in kept:
        parent, _, leaf = name.rpartition(".")
        setattr(model.get_submodule(parent), leaf, Float32(copy.deepcopy(folded.get_submodule(name))))
    return model


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
        folded = optimize_for_inference(copy.deepcopy(exact))
        for part, kept in PARTS.items():
            reduced = variant(folded, kept)
            trial = measure(exact, reduced, images, classes, floor, "measurement")
            print(f"bf16, {part} in fp32: agreement mAP50 {trial.agreement:.3f} over {trial.compared} detections, "
                  f"{trial.speedup:.2f}x the exact model")


if __name__ == "__main__":
    main()
