"""Optimiser and learning-rate schedule, as the Faster R-CNN recipes train: SGD with momentum,
no weight decay on norms and biases, linear warmup, then step decay or cosine."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

# torchvision's and Detectron2's recipe: 0.02 for 16 images per step, scaled linearly.
REFERENCE_BATCH = 16


def scaled_lr(optim_cfg: Mapping[str, Any], global_batch: int) -> float:
    """optim.lr when set, else optim.base_lr scaled linearly to the global batch size."""
    if optim_cfg["lr"] is not None:
        return float(optim_cfg["lr"])
    return float(optim_cfg["base_lr"]) * global_batch / REFERENCE_BATCH


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on conv/linear weights only: decaying norm scales and biases only hurts."""
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, optim_cfg: Mapping[str, Any], lr: float) -> torch.optim.Optimizer:
    groups = parameter_groups(model, float(optim_cfg["weight_decay"]))
    name = optim_cfg["name"]
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=float(optim_cfg["momentum"]))
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(optim_cfg["betas"]))
    raise ValueError(f"unknown optim.name {name!r}; use sgd or adamw")


def lr_factor(step: int, total_steps: int, optim_cfg: Mapping[str, Any]) -> float:
    """Multiplier of the peak learning rate at optimizer step ``step`` (0-based)."""
    warmup = min(int(optim_cfg["warmup_steps"]), max(total_steps // 5, 1))
    if step < warmup:
        start = float(optim_cfg["warmup_factor"])
        return start + (1.0 - start) * step / warmup
    if optim_cfg["schedule"] == "cosine":
        progress = (step - warmup) / max(total_steps - warmup, 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    if optim_cfg["schedule"] == "multistep":
        passed = sum(step >= round(fraction * total_steps) for fraction in optim_cfg["milestones"])
        return float(optim_cfg["gamma"]) ** passed
    if optim_cfg["schedule"] == "constant":
        return 1.0
    raise ValueError(f"unknown optim.schedule {optim_cfg['schedule']!r}; use multistep, cosine or constant")


def build_scheduler(optimizer: torch.optim.Optimizer, optim_cfg: Mapping[str, Any], total_steps: int):
    """A per-step LambdaLR (a plain closure, so its state_dict stays weights_only-loadable)."""
    cfg = dict(optim_cfg)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total_steps, cfg))
