"""Issue 28 item 3: does quantizing the box head's fc6/fc7 pay on the torch int8 path? The int8 path as shipped
(backbone + FPN and the RPN conv int8), the same with fc6/fc7 as static int8 (calibrated with the rest), and the
same with fc6/fc7 as dynamic int8 (torch's quantize_dynamic: activation ranges per call), each scored as the
precision rule scores a path: mAP50 of its detections against the exact fp32 model's on the same pictures.
Whole detections are timed one picture at a time, the variants taking turns; the box head alone is timed on
pooled regions, as many as the exact model's box head gets per picture on average. Times are wall and this
process's CPU time (the robust one on a shared machine at --threads 1). Calibration: --calibrate pictures of the
folder after the --count that are scored; the static box head's ranges are observed behind the int8 backbone.
Run: .venv/bin/python measurements/int8_box_head.py WEIGHTS IMAGE_FOLDER [--count 16] [--calibrate 16] [--rounds 3]
     [--threads N]"""

import argparse
import copy
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from rcnn_cli.api import Detector
from rcnn_cli.data.images import read_chw
from rcnn_cli.eval.agreement import compare_detections
from rcnn_cli.inference.quantize import quantize_int8


def static_box_head(model: nn.Module, calibration: list[torch.Tensor]) -> nn.Module:
    """``model``'s TwoMLPHead as static int8 (fc6 + ReLU, fc7 + ReLU: x86 qconfig, as the rest of the int8 path),
    its activation ranges observed while the already quantized ``model`` runs the calibration pictures."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    head = model.roi_heads.box_head
    example = torch.zeros(2, head.fc6.in_features // 49, 7, 7)
    keep = {"preserved_attributes": ["out_features"]}
    model.roi_heads.box_head = prepare_fx(head, get_default_qconfig_mapping("x86"), example_inputs=(example,),
                                          prepare_custom_config=keep)
    with torch.no_grad():
        for image in calibration:
            model([image])
    model.roi_heads.box_head = convert_fx(model.roi_heads.box_head, convert_custom_config=keep)
    return model


def variants(exact: nn.Module, calibration: list[torch.Tensor]) -> dict[str, nn.Module]:
    shipped = quantize_int8(copy.deepcopy(exact), calibration)
    static = static_box_head(copy.deepcopy(shipped), calibration)
    dynamic = copy.deepcopy(shipped)
    dynamic.roi_heads.box_head = torch.ao.quantization.quantize_dynamic(dynamic.roi_heads.box_head, {nn.Linear},
                                                                         dtype=torch.qint8)
    return {"fp32 (exact)": exact, "int8 as shipped": shipped, "int8 + box head static": static,
            "int8 + box head dynamic": dynamic}


def regions_per_image(model: nn.Module, images: list[torch.Tensor]) -> float:
    """How many pooled regions the box head gets per picture (rpn_post_nms_top_n_test at most)."""
    seen: list[int] = []
    hook = model.roi_heads.box_head.register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape[0]))
    for image in images:
        model([image])
    hook.remove()
    return sum(seen) / len(images)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("weights")
    parser.add_argument("images")
    parser.add_argument("--count", type=int, default=16)
    parser.add_argument("--calibrate", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    detector = Detector.load(args.weights, precision="fp32", device="cpu")
    exact = detector.model.eval()
    pictures = sorted(Path(args.images).glob("*.jpg"))
    images = [read_chw(path) for path in pictures[:args.count]]
    calibration = [read_chw(path) for path in pictures[args.count:args.count + args.calibrate]]
    classes, floor = len(detector.class_names), float(detector.config["box_score_thresh"])
    print(f"{args.weights}: {len(images)} pictures scored, {len(calibration)} calibrate, score floor {floor}, "
          f"{torch.get_num_threads()} torch threads")
    with torch.inference_mode():
        models = variants(exact, calibration)
        outputs = {name: [model([image])[0] for image in images] for name, model in models.items()}
        wall: dict[str, list[float]] = {name: [] for name in models}
        cpu: dict[str, list[float]] = {name: [] for name in models}
        for _ in range(args.rounds):
            for name, model in models.items():
                start, start_cpu = time.perf_counter(), time.process_time()
                for image in images:
                    model([image])
                wall[name].append((time.perf_counter() - start) / len(images) * 1000)
                cpu[name].append((time.process_time() - start_cpu) / len(images) * 1000)
        regions = round(regions_per_image(exact, images))
        pooled = torch.rand(regions, exact.roi_heads.box_head.fc6.in_features // 49, 7, 7)
        head_ms: dict[str, list[float]] = {name: [] for name in models}
        for _ in range(args.rounds * 5):
            for name, model in models.items():
                start = time.process_time()
                model.roi_heads.box_head(pooled)
                head_ms[name].append((time.process_time() - start) * 1000)
    reference = outputs["fp32 (exact)"]
    for name in models:
        agreement = compare_detections(reference, outputs[name], classes, floor)
        print(f"{name}: agreement mAP50 {agreement.map50:.3f} over {agreement.compared} detections; "
              f"{statistics.median(wall[name]):.0f} ms/img wall, {statistics.median(cpu[name]):.0f} ms/img CPU "
              f"(medians of {args.rounds}; min {min(wall[name]):.0f} / {min(cpu[name]):.0f}); box head alone on "
              f"{regions} regions (the mean per picture) {statistics.median(head_ms[name]):.1f} ms CPU "
              f"(min {min(head_ms[name]):.1f})")

if __name__ == "__main__":
    main()
