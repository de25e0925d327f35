"""What the numbers were measured on: printed and stored with every benchmark result."""

from __future__ import annotations

import os

import torch
import torchvision

from ..hardware import bf16_speedup, current

# CPU features that decide which fast path is worth it (bf16 matmuls, int8 dot products).
FLAGS_OF_INTEREST = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_int8")


def machine_info() -> dict:
    hardware = current()
    flags = hardware.cpu_flags
    return {
        "cpu": hardware.cpu_model,
        "cpu_kind": hardware.kind,
        "hardware_profile": hardware.profile,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_flags": sorted(f for f in FLAGS_OF_INTEREST if f in flags),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def precision_advice() -> str:
    """One line: which reduced precisions this CPU runs natively and what ``auto`` does with them
    (the rule itself: inference/precision.py)."""
    hardware = current()
    flags = hardware.cpu_flags
    if hardware.native_bf16:
        native = ", ".join(sorted({"avx512_bf16", "amx_bf16"} & flags))
        bf16 = (f"native bf16 ({native}), a 3x3 conv {bf16_speedup('cpu'):.1f}x faster than fp32: model.precision=auto "
                "runs bf16 where it agrees with the exact model (mAP50 >= 0.98) and is faster on your images")
    else:
        bf16 = "no native bf16 (it would be emulated and slower): model.precision=auto stays exact (folded)"
    vnni = sorted({"avx512_vnni", "avx_vnni", "amx_int8"} & flags)
    int8 = (f"int8 dot products ({', '.join(vnni)})" if vnni
            else "int8 through AVX2 kernels (no VNNI)" if "avx2" in flags else "no int8 SIMD")
    return f"this CPU: {bf16}; {int8}, model.precision=int8 quantizes the backbone ({hardware.describe()})."
