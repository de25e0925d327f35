"""Int8 inference path: the convolution-heavy parts (backbone + FPN, the RPN's 3x3 conv) run as
int8 with per-channel weights and activation ranges calibrated on the user's own images.

Measured on a 2-core AVX2 CPU (no VNNI), resnet50_fpn at 800 px: backbone + FPN 1.9 s fp32
(folded, channels_last) -> 1.0 s int8. The RoI heads, proposals and NMS stay fp32: box
regression and class scores are where rounding would move detections (the box head's fc6 is
still a large share at 1000+ proposals; see docs/speed.md). fc6/fc7 in int8 (static or dynamic)
were measured on three trained models: 3-12% faster at 100-300 regions, agreement moved by -0.021
to +0.016, so they stay fp32 (docs/speed.md "Int8 box head", measurements/int8_box_head.py).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..errors import RcnnError

ENGINE = "x86"      # fbgemm + oneDNN kernels: AVX2 and up; VNNI/AMX used when the CPU has them


class QuantizationError(RcnnError, ValueError):
    """The model cannot run in int8 here (no quantized CPU engine, or no calibration images)."""


def _to_torch_batchnorm(module: nn.Module) -> None:
    """FrozenBatchNorm2d -> eval nn.BatchNorm2d with the same statistics, in place, so that FX's
    conv + bn + relu fusion recognises the pattern."""
    from torchvision.ops import FrozenBatchNorm2d

    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, FrozenBatchNorm2d):
                norm = nn.BatchNorm2d(child.weight.numel(), eps=child.eps).eval()
                for key in ("weight", "bias", "running_mean", "running_var"):
                    getattr(norm, key).data.copy_(getattr(child, key))
                setattr(parent, name, norm)


def quantize_int8(model: nn.Module, calibration_images: Sequence[Tensor], batch_size: int = 2) -> nn.Module:
    """Convert ``model`` (a FasterRCNN, eval) in place and return it.

    calibration_images: per image (3, H, W) uint8 or float 0-1, the kind the model will see;
    8 or more give stable activation ranges. The model is run on them once in fp32 with observers.
    """
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    if ENGINE not in torch.backends.quantized.supported_engines:
        raise QuantizationError(f"this torch build has no {ENGINE} quantized engine; use model.precision=auto")
    if not calibration_images:
        raise QuantizationError("model.precision=int8 needs calibration images (the inputs or the dataset)")
    torch.backends.quantized.engine = ENGINE
    model.eval()
    model.channels_last = False
    _to_torch_batchnorm(model.backbone)
    _to_torch_batchnorm(model.rpn.head)
    mapping = get_default_qconfig_mapping(ENGINE)
    channels = model.rpn.head.cls_logits.in_channels
    with warnings.catch_warnings():
        # FX graph quantization warns that it is deprecated for torchao's pt2e, which needs
        # torch.export, and that fails on this detector (see export/); the FX path works.
        warnings.simplefilter("ignore")
        backbone = prepare_fx(model.backbone, mapping, example_inputs=(torch.zeros(1, 3, 64, 64),),
                              prepare_custom_config={"preserved_attributes": ["out_channels"]})
        rpn_conv = prepare_fx(model.rpn.head.conv, mapping, example_inputs=(torch.zeros(1, channels, 8, 8),))
        model.backbone, model.rpn.head.conv = backbone, rpn_conv
        with torch.no_grad():
            for start in range(0, len(calibration_images), batch_size):
                model(list(calibration_images[start:start + batch_size]))
        model.backbone = convert_fx(backbone, convert_custom_config={"preserved_attributes": ["out_channels"]})
        model.rpn.head.conv = convert_fx(rpn_conv)
    model.precision = "int8"
    return model
