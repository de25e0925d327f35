"""What RoI align costs on the CPU (docs/speed.md, "Where the time goes"). 1: torchvision's roi_align on one
800 px FPN level (256 x 200 x 272) with 1,000 regions, beside a 2000x2000 matmul, both with 2 torch threads: the
share of the process's CPU time spent on the calling thread (1.0: one thread did all the work, about 0.5: two
shared it; unlike wall times this does not depend on how busy a shared machine is). 2: our MultiScaleRoIPool
against torchvision's MultiScaleRoIAlign on an 800x1088 pyramid with 1,000 regions (the same output), and ours
on channels_last maps (the folded path's), and for both the share of the CPU time on the calling thread (ours
cuts the regions into one chunk per torch thread).
Run: .venv/bin/python measurements/roi_align_cost.py"""

import statistics
import time
from collections import OrderedDict

import torch
from torchvision.ops import MultiScaleRoIAlign, roi_align

from rcnn_cli.model.roi_pool import MultiScaleRoIPool

ROUNDS = 6      # the contenders take turns, so all see the same load on a shared machine


def medians(contenders: dict) -> None:
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(ROUNDS):
        for name, run in contenders.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    for name, seconds in times.items():
        print(f"{name}: {statistics.median(seconds) * 1000:.0f} ms (median of {ROUNDS})")


def calling_thread_share(run) -> float:
    shares = []
    for _ in range(ROUNDS):
        thread, process = time.thread_time(), time.process_time()
        run()
        shares.append((time.thread_time() - thread) / (time.process_time() - process))
    return statistics.median(shares)


def threads_part() -> None:
    feature = torch.rand(1, 256, 200, 272)
    corners = torch.rand(1000, 2) * 800
    rois = torch.cat([torch.zeros(1000, 1), corners, corners + 64], dim=1)
    matrix = torch.rand(2000, 2000)
    torch.set_num_threads(2)
    contenders = (("roi_align", lambda: roi_align(feature, rois, (7, 7), 0.25, 2)), ("matmul", lambda: matrix @ matrix))
    for name, run in contenders:
        print(f"{name}, 2 threads: {calling_thread_share(run):.2f} of the CPU time on the calling thread "
              f"(median of {ROUNDS})")


def pyramid_part() -> None:
    height, width = 800, 1088
    maps = OrderedDict((str(level), torch.rand(1, 256, height // 2 ** (level + 2), width // 2 ** (level + 2)))
                       for level in range(4))
    channels_last = OrderedDict((k, v.contiguous(memory_format=torch.channels_last)) for k, v in maps.items())
    corners = torch.rand(1000, 2) * torch.tensor([width - 40.0, height - 40.0])
    boxes = torch.cat([corners, corners + torch.rand(1000, 2) * 300 + 8], dim=1)
    rois, sizes = torch.cat([torch.zeros(1000, 1), boxes], dim=1), torch.tensor([[height, width]])
    ours, theirs = MultiScaleRoIPool(list(maps), 7, 2, "roialign"), MultiScaleRoIAlign(list(maps), 7, 2)
    assert torch.allclose(ours(maps, rois, sizes), theirs(maps, [boxes], [(height, width)]), atol=1e-5)
    medians({"ours (MultiScaleRoIPool)": lambda: ours(maps, rois, sizes),
             "torchvision (MultiScaleRoIAlign)": lambda: theirs(maps, [boxes], [(height, width)]),
             "ours on channels_last maps": lambda: ours(channels_last, rois, sizes)})
    for name, run in (("ours (MultiScaleRoIPool)", lambda: ours(maps, rois, sizes)),
                      ("torchvision (MultiScaleRoIAlign)", lambda: theirs(maps, [boxes], [(height, width)]))):
        print(f"{name}, {torch.get_num_threads()} threads: {calling_thread_share(run):.2f} of the CPU time on "
              f"the calling thread (median of {ROUNDS})")


def main() -> None:
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    threads_part()
    torch.set_num_threads(threads)
    with torch.inference_mode():
        pyramid_part()


if __name__ == "__main__":
    main()
