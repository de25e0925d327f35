"""What this machine's hardware can do, answered in one place and overridable for tests.

Every hardware-dependent branch (auto precision, OpenVINO's precision hint, training's mixed
precision, the benchmark's bf16 columns) asks ``current()``. ``RCNN_HARDWARE`` (or ``override()``
in tests) replaces what the machine reports with a named profile, so the whole suite can run the
bf16-native branches on an AVX2-only CPU and the AVX2 branches on an AMX Xeon: torch bf16 and
int8 execute on any x86 CPU, only slower where not native.

    RCNN_HARDWARE=amx           a Sapphire Rapids class Xeon (AMX, avx512_bf16, VNNI)
    RCNN_HARDWARE=avx512_bf16   an EPYC Genoa class CPU (avx512_bf16 and VNNI, no AMX)
    RCNN_HARDWARE=avx2          an AVX2-only CPU (no native bf16, no VNNI)
    RCNN_HARDWARE=detected      what /proc/cpuinfo and torch say (the default)
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import platform
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .timing import timed

NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
INT8_DOT_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
# bf16 must beat fp32 by this much on the probe: rounding costs accuracy, so a tie is not enough.
BF16_MIN_SPEEDUP = 1.3
ENV = "RCNN_HARDWARE"


@dataclass(frozen=True)
class Hardware:
    """What the CPU (and GPU) can do. bf16_probe: the conv probe's bf16/fp32 speed-up when a profile
    states it (None: timed on this machine, once per process, see ``bf16_speedup``)."""

    profile: str
    cpu_model: str
    cpu_flags: frozenset[str]
    cuda: bool
    cuda_bf16: bool
    bf16_probe: float | None = None

    @property
    def native_bf16(self) -> bool:
        return bool(NATIVE_BF16_FLAGS & self.cpu_flags)

    @property
    def amx(self) -> bool:
        return "amx_bf16" in self.cpu_flags

    @property
    def int8_dot(self) -> bool:
        return bool(INT8_DOT_FLAGS & self.cpu_flags)

    @property
    def kind(self) -> str:
        """One phrase for the CPU kind, as the docs name them."""
        if self.amx:
            return "AMX"
        if self.native_bf16:
            return "AVX-512 bf16"
        if "avx512f" in self.cpu_flags:
            return "AVX-512, no native bf16"
        return "AVX2 only" if "avx2" in self.cpu_flags else "no AVX2"

    def describe(self) -> str:
        source = "" if self.profile == "detected" else f" (as profile {self.profile}: {ENV})"
        return f"{self.cpu_model}, {self.kind}{source}"


_SPR = {"avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_bf16", "avx512_vnni",
        "amx_bf16", "amx_int8", "amx_tile"}
# name -> (CPU model, flags, probe speed-up): the probe figures were measured on these CPU kinds
# (docs/speed.md: 3x+ on a 2-core AMX Xeon, 2.0x on a 2-core EPYC with avx512_bf16).
PROFILES: dict[str, tuple[str, frozenset[str], float | None]] = {
    "amx": ("Intel Xeon (AMX profile)", frozenset(_SPR), 3.3),
    "avx512_bf16": ("AMD EPYC (avx512_bf16 profile)", frozenset(_SPR - {"amx_bf16", "amx_int8", "amx_tile"}), 2.0),
    "avx2": ("AMD EPYC (AVX2 profile)", frozenset({"avx", "avx2", "fma", "f16c"}), None),
}


def cpu_flags_of_this_machine() -> frozenset[str]:
    """The flags line of /proc/cpuinfo (empty where there is none, e.g. macOS)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_model_of_this_machine() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.cache
def detected() -> Hardware:
    cuda = torch.cuda.is_available()
    return Hardware("detected", cpu_model_of_this_machine(), cpu_flags_of_this_machine(), cuda,
                    cuda and torch.cuda.is_bf16_supported())


def profile(name: str) -> Hardware:
    """A named profile: its CPU, this machine's GPU (a profile cannot lend one)."""
    if name == "detected":
        return detected()
    if name not in PROFILES:
        from .errors import UsageError, nearest_hint

        raise UsageError(f"{ENV}={name}: unknown hardware profile; {nearest_hint(name, ['detected', *PROFILES])}")
    model, flags, probe = PROFILES[name]
    return dataclasses.replace(detected(), profile=name, cpu_model=model, cpu_flags=flags, bf16_probe=probe)


_override: Hardware | None = None


def current() -> Hardware:
    """What the hardware can do: an ``override()`` in force, else ``RCNN_HARDWARE``, else detected."""
    if _override is not None:
        return _override
    return profile(os.environ.get(ENV) or "detected")


@contextlib.contextmanager
def override(name_or_hardware: str | Hardware) -> Iterator[Hardware]:
    """Within the block (and in subprocesses started there, through ``RCNN_HARDWARE``), the hardware
    reports ``name_or_hardware``."""
    global _override
    hardware = profile(name_or_hardware) if isinstance(name_or_hardware, str) else name_or_hardware
    previous, previous_env = _override, os.environ.get(ENV)
    _override = hardware
    if isinstance(name_or_hardware, str):
        os.environ[ENV] = name_or_hardware
    try:
        yield hardware
    finally:
        _override = previous
        if previous_env is None:
            os.environ.pop(ENV, None)
        else:
            os.environ[ENV] = previous_env


def has_native_bf16() -> bool:
    return current().native_bf16




def bf16_speedup(device_type: str = "cpu") -> float:
    """How much faster a backbone-like 3x3 conv (256 channels, 64x64) runs in bf16 than in fp32
    here; 0.0 where bf16 is not native (a CPU without avx512_bf16/AMX, a GPU without bf16
    support). A profile states its figure; otherwise timed (about 0.3 s on a 2-core CPU, once per
    process). Smaller convs (128 channels) showed no gain on an AMX CPU where the backbone as a whole
    ran 3.3x faster, hence this size."""
    hardware = current()
    if device_type == "cpu" and not hardware.native_bf16:
        return 0.0
    if device_type == "cuda" and not hardware.cuda_bf16:
        return 0.0
    if device_type == "cpu" and hardware.bf16_probe is not None:
        return hardware.bf16_probe
    return _timed_bf16_speedup(device_type)


@functools.cache
def _timed_bf16_speedup(device_type: str) -> float:
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
        return current().cuda_bf16
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
        from .errors import UsageError

        raise UsageError(f"device={name}: this machine has no CUDA GPU; use device=auto or device=cpu")
    return device


def cpu_count() -> int:
    """Cores this process may run on: its CPU affinity (a container's or taskset's limit), which
    ``os.cpu_count`` ignores."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
