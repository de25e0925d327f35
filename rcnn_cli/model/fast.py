"""Inference fast path: BatchNorm folded into the convolution before it, channels_last memory
layout. Same fp32 arithmetic up to float rounding; ``model.precision=fp32`` skips it."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights
from torchvision.ops import FrozenBatchNorm2d

NORM_TYPES = (nn.BatchNorm2d, FrozenBatchNorm2d)


def _fuse(conv: nn.Conv2d, norm: nn.Module) -> nn.Conv2d:
    """A conv computing conv -> norm (eval statistics) in one step."""
    eps = getattr(norm, "eps", 1e-5)
    weight, bias = fuse_conv_bn_weights(conv.weight, conv.bias, norm.running_mean, norm.running_var, eps,
                                        norm.weight, norm.bias)
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode)
    fused.weight, fused.bias = weight, bias
    return fused.requires_grad_(False)


def fold_batchnorm(module: nn.Module) -> int:
    """Fold every norm that directly follows a conv (``convK``/``bnK`` siblings as in ResNet
    blocks, or consecutive entries of a Sequential) into it, in place. Returns the count."""
    folded = 0
    for parent in list(module.modules()):
        children = dict(parent.named_children())
        pairs = []
        if isinstance(parent, nn.Sequential):
            names = list(children)
            pairs = [(a, b) for a, b in zip(names, names[1:])]
        else:
            pairs = [(name, "bn" + name[4:]) for name in children if name.startswith("conv")]
        for conv_name, norm_name in pairs:
            conv, norm = children.get(conv_name), children.get(norm_name)
            if isinstance(conv, nn.Conv2d) and isinstance(norm, NORM_TYPES):
                if isinstance(norm, nn.BatchNorm2d) and (norm.training or not norm.track_running_stats):
                    continue
                setattr(parent, conv_name, _fuse(conv, norm))
                setattr(parent, norm_name, nn.Identity())
                children[conv_name], children[norm_name] = getattr(parent, conv_name), None
                folded += 1
    return folded


def optimize_for_inference(model: nn.Module, channels_last: bool = True) -> nn.Module:
    """eval(), BatchNorm folded into convs, backbone in channels_last. In place; returns model."""
    model.eval()
    fold_batchnorm(model.backbone)
    if channels_last:
        model.backbone.to(memory_format=torch.channels_last)
        model.channels_last = True
    return model


PRECISIONS = ("auto", "fp32", "int8")


def prepare_for_inference(model: nn.Module, precision: str = "auto",
                          calibration_images: Sequence[torch.Tensor] = ()) -> nn.Module:
    """The model set up for ``model.precision``, in place.

    auto: BatchNorm folded + channels_last (same detections, faster); fp32: the exact eager model;
    int8: quantized backbone and RPN conv, calibrated on ``calibration_images`` (per image
    (3, H, W), the kind of picture the model will see).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"model.precision={precision}: use one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return model.eval()
    if precision == "int8":
        from .quantize import quantize_int8

        return quantize_int8(model, calibration_images)
    return optimize_for_inference(model)
