"""Timing and memory figures, measured one way for every command (benchmark, export checks, the
bf16 probe): wall seconds after untimed warm-up runs, median and quartiles, peak resident memory."""

from __future__ import annotations

import resource
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch


def timed(fn: Callable[[], Any], repeats: int, warmup: int) -> list[float]:
    """Wall seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed ones (the first call
    lets oneDNN pick and cache its kernels), with the GPU synchronised around each."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times

def spread(times: list[float]) -> dict[str, float]:
    quartiles = statistics.quantiles(times, n=4) if len(times) >= 2 else [times[0]] * 3
    return {"median_s": statistics.median(times), "q1_s": quartiles[0], "q3_s": quartiles[2], "runs": len(times)}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed_each(fn: Callable[[Any], Any], items: Sequence[Any], warmup: int = 1) -> tuple[list[Any], float]:
    """(outputs, median wall seconds per item) of ``fn`` over ``items`` one at a time, after ``warmup``
    untimed calls on the first item: how the precision rule and export's checks compare two paths on
    the same images."""
    for _ in range(warmup):
        fn(items[0])
    outputs, seconds = [], []
    for item in items:
        start = time.perf_counter()
        outputs.append(fn(item))
        seconds.append(time.perf_counter() - start)
    return outputs, statistics.median(seconds)

