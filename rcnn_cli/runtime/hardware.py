"""What the processor can do fast, read at run time: CPU flags, and a short timing probe that
decides whether bf16 pays on this machine (it is 3x faster on a CPU with AMX and slower where
bf16 is emulated, so it is measured, never assumed)."""

from __future__ import annotations

import functools
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# bf16 must beat fp32 by this much on the probe: rounding costs accuracy, so a tie is not enough.
BF16_MIN_SPEEDUP = 1.3


def cpu_flags() -> set[str]:
    """The flags line of /proc/cpuinfo (empty where there is none, e.g. macOS)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def has_native_bf16() -> bool:
    return bool(set(NATIVE_BF16_FLAGS) & cpu_flags())


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


@functools.cache
def bf16_speedup(device_type: str = "cpu") -> float:
    """How much faster a backbone-like 3x3 conv (256 channels, 64x64) runs in bf16 than in fp32
    here; 0.0 where bf16 is not native (a CPU without avx512_bf16/AMX, a GPU without bf16
    support). About 0.3 s on a 2-core CPU, once per process. Smaller convs (128 channels) showed
    no gain on an AMX CPU where the backbone as a whole ran 3.3x faster, hence this size."""
    if device_type == "cpu" and not has_native_bf16():
        return 0.0
    if device_type == "cuda" and not (torch.cuda.is_available() and torch.cuda.is_bf16_supported()):
        return 0.0
    device = torch.device(device_type)
    conv = nn.Conv2d(256, 256, 3, padding=1).to(device).eval()
    x = torch.rand(1, 256, 64, 64, device=device).contiguous(memory_format=torch.channels_last)
    conv = conv.to(memory_format=torch.channels_last)
    with torch.inference_mode():
        # best of 5: the run least disturbed by other work on the machine
        fp32 = min(timed(lambda: conv(x), repeats=5, warmup=1))
        conv, x = conv.to(torch.bfloat16), x.to(torch.bfloat16)
        bf16 = min(timed(lambda: conv(x), repeats=5, warmup=1))
    return fp32 / bf16


def bf16_pays_off(device_type: str = "cpu") -> bool:
    """CPUs: timed (native bf16 ranges from 3x faster to no gain). GPUs: from support alone; their
    tensor cores run bf16 at fp16's rate, and the probe conv is launch-bound there, so a timing
    only adds noise (on one H200, three of four concurrent runs timed it below the threshold)."""
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return bf16_speedup(device_type) >= BF16_MIN_SPEEDUP


def training_autocast_dtype(device_type: str, processes: int = 1) -> torch.dtype | None:
    """Mixed precision for training on ``device_type``: bf16 where it pays (see ``bf16_speedup``),
    fp16 on other GPUs (with a gradient scaler), none (fp32) on other CPUs.

    processes > 1 (DDP) on CPUs: every rank must choose the same, and a timing can differ between
    ranks near the threshold. So the choice is made from what the hardware supports, which is the
    same everywhere, not timed (GPUs never are, see ``bf16_pays_off``)."""
    if processes > 1 and device_type == "cpu":
        if has_native_bf16():
            return torch.bfloat16
    elif bf16_pays_off(device_type):
        return torch.bfloat16
    return torch.float16 if device_type == "cuda" else None


def resolve_device(name: str = "auto") -> torch.device:
    """The ``device`` setting as a torch device: ``auto`` is the GPU when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        from ..errors import UsageError

        raise UsageError(f"device={name}: this machine has no CUDA GPU; use device=auto or device=cpu")
    return device
