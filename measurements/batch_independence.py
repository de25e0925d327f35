"""Does a picture's detections depend on its batch? And what batching costs: the face-mask validation
pictures (mixed sizes) through the Python API at batch 1 and at batch N, in the order `rcnn eval` reads them.

Prints ms per picture at each batch size, the detections at each, and how many pictures' detections
differ between the two: bit for bit, and beyond a float tolerance (boxes 1e-3 px, scores 1e-5).

Run: PYTHONPATH=. .venv/bin/python measurements/batch_independence.py CKPT [--batch 4] [--precision fp32]
(PYTHONPATH at another checkout measures that code: the same script before and after a change.)
"""

import argparse
import json
import time
from pathlib import Path

import torch
from torchvision.io import ImageReadMode, read_image

from rcnn_cli.api import Detector

FACEMASK = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "facemask-coco"


def run(detector: Detector, images: list[torch.Tensor], batch: int) -> tuple[list[dict], float]:
    detector.predict(images[:batch], batch_size=batch)           # warm-up: first-call allocations
    start = time.perf_counter()
    found = detector.predict(images, batch_size=batch)
    return found, (time.perf_counter() - start) * 1000 / len(images)


def differs(a: dict, b: dict, box_tol: float = 0.0, score_tol: float = 0.0) -> bool:
    if a["boxes"].shape != b["boxes"].shape or not torch.equal(a["labels"], b["labels"]):
        return True
    return bool(((a["boxes"] - b["boxes"]).abs() > box_tol).any()
                or ((a["scores"] - b["scores"]).abs() > score_tol).any())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("weights")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--root", type=Path, default=FACEMASK)
    args = parser.parse_args()
    names = [image["file_name"] for image in
             json.loads((args.root / "annotations" / "custom_val.json").read_text())["images"]]
    images = [read_image(str(args.root / "val2017" / name), ImageReadMode.RGB) for name in names]
    detector = Detector.load(args.weights, precision=args.precision, device="cpu")
    print(f"{len(images)} pictures, runs as {detector.runs_as}, {torch.get_num_threads()} torch threads")
    alone, ms_alone = run(detector, images, 1)
    together, ms_together = run(detector, images, args.batch)
    for batch, found, ms in ((1, alone, ms_alone), (args.batch, together, ms_together)):
        print(f"batch {batch}: {ms:.1f} ms/picture, {sum(len(d['boxes']) for d in found)} detections")
    exact = sum(differs(a, b) for a, b in zip(alone, together))
    beyond = sum(differs(a, b, 1e-3, 1e-5) for a, b in zip(alone, together))
    print(f"pictures whose detections differ between batch 1 and {args.batch}: {exact} bit for bit, "
          f"{beyond} beyond 1e-3 px / 1e-5 score")


if __name__ == "__main__":
    main()
