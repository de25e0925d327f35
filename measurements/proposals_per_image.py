"""Issue 28 item 3: what proposals per image at test time (model.rpn_post_nms_top_n_test; 1,000 by default,
the paper used 300) cost in time, with the same weights on the same pictures. The counts take turns, so all see
the same load on a shared machine; AP comes from ``rcnn eval ... model.rpn_post_nms_top_n_test=N`` (docs/speed.md).
Run: .venv/bin/python measurements/proposals_per_image.py WEIGHTS IMAGE_FOLDER [--count 16] [--rounds 3]
     [--precision fp32] [--proposals 1000,300,100]"""

import argparse
import statistics
import time
from pathlib import Path

from rcnn_cli.api import Detector


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("weights")
    parser.add_argument("images")
    parser.add_argument("--count", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--proposals", default="1000,300,100")
    args = parser.parse_args()
    pictures = sorted(Path(args.images).glob("*.jpg"))[:args.count]
    counts = [int(n) for n in args.proposals.split(",")]
    detectors = {n: Detector.load(args.weights, precision=args.precision, device="cpu", rpn_post_nms_top_n_test=n)
                 for n in counts}
    for detector in detectors.values():
        detector.predict(pictures[:2])                     # warm-up, and the precision check where auto
    times: dict[int, list[float]] = {n: [] for n in counts}
    found: dict[int, int] = {}
    for _ in range(args.rounds):
        for n, detector in detectors.items():
            start = time.perf_counter()
            results = detector.predict(pictures)
            times[n].append((time.perf_counter() - start) / len(pictures) * 1000)
            found[n] = sum(len(r["boxes"]) for r in results)
    print(f"{len(pictures)} pictures, {args.rounds} rounds, precision {args.precision}, "
          f"runs as {detectors[counts[0]].runs_as}")
    for n in counts:
        print(f"{n} proposals: median {statistics.median(times[n]):.0f} ms/img (min {min(times[n]):.0f}), "
              f"{found[n]} detections, {statistics.median(times[counts[0]]) / statistics.median(times[n]):.2f}x "
              f"the first count's speed")


if __name__ == "__main__":
    main()
