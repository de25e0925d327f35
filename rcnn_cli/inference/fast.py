"""Inference fast paths. Folded: BatchNorm folded into the convolution before it, channels_last
memory layout, the same fp32 arithmetic up to float rounding. bf16: the folded model with the
convolutions (backbone + FPN, RPN head) and the box head's fully connected layers in bf16, where
the hardware runs bf16 natively; proposals, RoI pooling, box decoding and NMS stay fp32.
``model.precision=fp32`` skips all of it."""

from __future__ import annotations

from collections import OrderedDict
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


def use_channels_last(model: nn.Module) -> nn.Module:
    """Backbone weights and input batches in channels_last, in place: what oneDNN and cuDNN
    convolutions run fastest on, in bf16 most of all (training and inference)."""
    model.backbone.to(memory_format=torch.channels_last)
    model.channels_last = True
    return model


def optimize_for_inference(model: nn.Module, channels_last: bool = True) -> nn.Module:
    """eval(), BatchNorm folded into convs, backbone in channels_last. In place; returns model."""
    model.eval()
    fold_batchnorm(model.backbone)
    return use_channels_last(model) if channels_last else model


class Bfloat16(nn.Module):
    """``module`` with bf16 weights: float tensors going in are cast to bf16, and the outputs
    (a tensor, or a list/dict of them) cast to ``output_dtype`` (None leaves them in bf16 for a
    consumer that casts them itself, e.g. the RoI pooler)."""

    def __init__(self, module: nn.Module, output_dtype: torch.dtype | None = torch.float32):
        super().__init__()
        self.module = module.to(torch.bfloat16)
        self.output_dtype = output_dtype
        if hasattr(module, "out_channels"):
            self.out_channels = module.out_channels

    def forward(self, *inputs):
        outputs = self.module(*[_cast(x, torch.bfloat16) for x in inputs])
        return outputs if self.output_dtype is None else _cast(outputs, self.output_dtype)


def _cast(value, dtype: torch.dtype):
    if isinstance(value, torch.Tensor):
        return value.to(dtype) if value.is_floating_point() else value
    if isinstance(value, (list, tuple)):
        return type(value)(_cast(v, dtype) for v in value)
    if isinstance(value, dict):
        return OrderedDict((k, _cast(v, dtype)) for k, v in value.items())
    return value


class Float32(nn.Module):
    """``module`` kept in fp32 inside the bf16 path: float inputs are cast up to fp32."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module.float()

    def forward(self, *inputs):
        return self.module(*[_cast(x, torch.float32) for x in inputs])


def to_bfloat16(model: nn.Module) -> nn.Module:
    """The heavy layers in bf16, in place: backbone + FPN (features stay bf16 into the RPN head),
    the RPN's 3x3 conv and objectness logits (fp32 out) and the box head (pooled regions in, fp32
    region features out to the class and box predictor).

    The RPN's box-delta 1x1 conv stays fp32: its deltas go through exp() into every proposal's
    width and height, and their bf16 rounding was what broke agreement on weakly trained models
    (mAP50 against the exact model 0.973 -> 0.996 on a 2-epoch BCCD model, 0.965 -> 0.982 on a
    face-mask one; keeping the objectness conv or the box head in fp32 did not do both;
    ``measurements/bf16_layers.py``, docs/speed.md). It is 3,072 of the RPN head's 593,664
    multiply-adds per position (0.5%)."""
    model.backbone = Bfloat16(model.backbone, output_dtype=None)
    head = model.rpn.head
    head.conv = Bfloat16(head.conv, output_dtype=None)
    head.cls_logits, head.bbox_pred = Bfloat16(head.cls_logits), Float32(head.bbox_pred)
    model.roi_heads.box_head = Bfloat16(model.roi_heads.box_head)
    model.precision = "bf16"
    return model


PATHS = ("fp32", "folded", "bf16", "int8")


def prepare_for_inference(model: nn.Module, path: str = "folded",
                          calibration_images: Sequence[torch.Tensor] = ()) -> nn.Module:
    """The model set up to run ``path``, in place; ``model.precision`` then names it. Which path
    ``model.precision=auto`` takes is decided elsewhere, once (inference/precision.py).

    fp32: the exact eager model; folded: BatchNorm in the convs, channels_last (the same detections,
    faster); bf16: folded + the heavy layers in bf16, whatever the hardware; int8: quantized
    backbone and RPN conv, calibrated on ``calibration_images`` (per image (3, H, W), the kind of
    picture the model will see).
    """
    if path not in PATHS:
        raise ValueError(f"inference path {path}: use one of {', '.join(PATHS)}")
    if path == "fp32":
        model.precision = "fp32"
        return model.eval()
    if path == "int8":
        from .quantize import quantize_int8

        return quantize_int8(model, calibration_images)
    optimize_for_inference(model)
    model.precision = "folded"
    return to_bfloat16(model) if path == "bf16" else model
