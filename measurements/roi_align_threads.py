"""Does RoI align use more than one core on the CPU? torchvision's roi_align on one 800 px FPN level (256 x 200 x 272)
with 1,000 regions, at 1 and 2 torch threads, beside a 2000x2000 matmul that does use them (docs/speed.md, "Where
the time goes"). Run: .venv/bin/python measurements/roi_align_threads.py"""

import statistics
import time

import torch
from torchvision.ops import roi_align


def main() -> None:
    torch.manual_seed(0)
    feature = torch.rand(1, 256, 200, 272)
    corners = torch.rand(1000, 2) * 800
    rois = torch.cat([torch.zeros(1000, 1), corners, corners + 64], dim=1)
    matrix = torch.rand(2000, 2000)
    times: dict[str, list[float]] = {}
    for _ in range(6):          # the thread counts take turns, so both see the same load
        for threads in (1, 2):
            torch.set_num_threads(threads)
            for name, run in (("roi_align", lambda: roi_align(feature, rois, (7, 7), 0.25, 2)),
                              ("matmul", lambda: matrix @ matrix)):
                start = time.perf_counter()
                run()
                times.setdefault(f"{name}, {threads} threads", []).append(time.perf_counter() - start)
    for name, seconds in times.items():
        print(f"{name}: {statistics.median(seconds) * 1000:.0f} ms (median of {len(seconds)})")


if __name__ == "__main__":
    main()
