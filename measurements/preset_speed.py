"""ms/img of each COCO preset at its own size (model.precision=auto, batch 1, the same 4 BCCD images,
one process, random weights: the cost of the architecture). Chooses the default weights of
`rcnn predict` (docs/speed.md, "Pretrained presets"). Run: .venv/bin/python measurements/preset_speed.py"""

import statistics
import time
from pathlib import Path

import torch
import torchvision

from rcnn_cli import Detector
from rcnn_cli.hardware import cpu_model_of_this_machine as cpu_model
from rcnn_cli.hardware import has_native_bf16
from rcnn_cli.model import zoo

BCCD = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "bccd-voc" / "BCCD" / "JPEGImages"


def main() -> None:
    images = [torchvision.io.read_image(str(p)) for p in sorted(BCCD.glob("*.jpg"))[:4]]
    print(f"{cpu_model()}, native bf16: {has_native_bf16()}, {torch.get_num_threads()} threads")
    for named in zoo.DETECTION.values():
        torch.manual_seed(0)
        detector = Detector(named.preset, num_classes=91)
        detector.predict(images[0])                      # warm-up
        times = []
        for _ in range(2):
            for image in images:
                start = time.perf_counter()
                detector.predict(image)
                times.append(time.perf_counter() - start)
        ms = statistics.median(times) * 1000
        print(f"{named.name}: {detector.runs_as}, {ms:.0f} ms/img, COCO box AP {named.box_ap}, "
              f"{named.box_ap / ms * 1000:.0f} AP per CPU second")


if __name__ == "__main__":
    main()
