"""What the numbers were measured on: printed and stored with every benchmark result."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch
import torchvision

# CPU features that decide which fast path is worth it (bf16 matmuls, int8 dot products).
FLAGS_OF_INTEREST = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_int8")


def cpu_flags() -> set[str]:
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
    flags = cpu_flags()
    return bool({"avx512_bf16", "amx_bf16"} & flags)


def machine_info() -> dict:
    flags = cpu_flags()
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_flags": sorted(f for f in FLAGS_OF_INTEREST if f in flags),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def precision_advice() -> str:
    """One line: which reduced precision this CPU runs natively, so users pick model.precision."""
    flags = cpu_flags()
    bf16 = ("native bf16 (" + ", ".join(sorted({"avx512_bf16", "amx_bf16"} & flags)) + ")" if has_native_bf16()
            else "no native bf16 (bf16 would be emulated and slower; not used)")
    vnni = sorted({"avx512_vnni", "avx_vnni", "amx_int8"} & flags)
    int8 = (f"int8 dot products ({', '.join(vnni)})" if vnni
            else "int8 through AVX2 kernels (no VNNI)" if "avx2" in flags else "no int8 SIMD")
    return f"this CPU: {bf16}; {int8}. model.precision=int8 quantizes the backbone (see the int8 column)."
