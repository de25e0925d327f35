"""Issue 28 item 3: the OpenVINO paths auto compares (export/compiled.py PATHS: f32, bf16, int8, and the int8 IR
with its float tail at bf16), compiled from a checkpoint as auto compiles them and run in turns for several
rounds, so that every path sees the same load on a shared machine: ms/img (wall, one picture at a time, one
request, as auto runs them) and agreement mAP50 with the exact fp32 model, on the model's own val pictures.
Run: .venv/bin/python measurements/openvino_paths.py WEIGHTS [--count 16] [--rounds 5]"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from rcnn_cli.data.samples import sample_images
from rcnn_cli.eval.agreement import compare_detections
from rcnn_cli.export import compiled
from rcnn_cli.inference.exported import OpenVinoDetector
from rcnn_cli.inference.predictor import load_predictor
from rcnn_cli.settings.resolve import resolve


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("weights")
    parser.add_argument("--count", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    settings = resolve("predict", [], weights=args.weights)
    predictor = load_predictor(settings.cfg, settings.checkpoint, source=settings.weights, prepare=False)
    samples = sample_images(None, predictor.dataset, count=args.count)
    images, paths = samples.images, compiled.openvino_paths_here()
    classes, floor = len(predictor.class_names), float(predictor.model.roi_heads.score_thresh)
    exact = [predictor.detect([image])[0] for image in images]
    with tempfile.TemporaryDirectory() as folder:
        files = compiled.compile_openvino(predictor, paths, Path(folder), images,
                                          compiled.calibration_for(predictor, images))
        runners = {name: OpenVinoDetector(files[name], "cpu", compiled.HINTS[name], requests=1).detect
                   for name in paths}
        runners = {"torch fp32 (exact)": predictor.detect, **runners}
        outputs = {name: [detect([image])[0] for image in images] for name, detect in runners.items()}
        ms: dict[str, list[float]] = {name: [] for name in runners}
        for _ in range(args.rounds):
            for name, detect in runners.items():
                start = time.perf_counter()
                for image in images:
                    detect([image])
                ms[name].append((time.perf_counter() - start) / len(images) * 1000)
    print(f"{args.weights}: {len(images)} {samples.origin}, {args.rounds} rounds in turns")
    base = statistics.median(ms["torch fp32 (exact)"])
    for name in runners:
        agreement = compare_detections(exact, outputs[name], classes, floor)
        median = statistics.median(ms[name])
        print(f"{name}: {median:.0f} ms/img (min {min(ms[name]):.0f}), {base / median:.2f}x exact torch; "
              f"agreement mAP50 {agreement.map50:.3f} over {agreement.compared} detections")


if __name__ == "__main__":
    main()
