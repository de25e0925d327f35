"""Feature extractors built from torchvision: ResNet/MobileNetV3 + FPN, and the paper's VGG16."""

from __future__ import annotations

from collections import OrderedDict

import torchvision
from torch import Tensor, nn
from torchvision.models.detection.backbone_utils import BackboneWithFPN, mobilenet_backbone
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

# Backbone name -> number of stages that can be trained (torchvision's ranges).
MAX_TRAINABLE_LAYERS = {"resnet18_fpn": 5, "resnet50_fpn": 5, "resnet50_fpn_v2": 5,
                        "mobilenet_v3_large_fpn": 6, "vgg16": 5}
BACKBONES = tuple(MAX_TRAINABLE_LAYERS)
NORMS = {"frozen_bn": FrozenBatchNorm2d, "bn": nn.BatchNorm2d}


def build_backbone(name: str, norm: str, trainable_layers: int, fpn_channels: int = 256) -> nn.Module:
    """Returns a module mapping (B, 3, H, W) to an OrderedDict of feature maps, with an
    ``out_channels`` attribute. Module names match torchvision's detection models.

    Args:
        name: one of ``BACKBONES``.
        norm: ``frozen_bn`` (statistics fixed, torchvision's choice for pretrained weights) or
            ``bn`` (trainable BatchNorm, torchvision's choice when training from scratch).
        trainable_layers: stages trained from the top (resnet 0-5, mobilenet 0-6, vgg16 0-5).
        fpn_channels: width of the ResNet FPN levels; 256 as torchvision (needed for its weights),
            less for small from-scratch models where the FPN, not the backbone, dominates the cost.
    """
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    norm_layer = NORMS[norm]
    if name == "resnet18_fpn":
        return _resnet_fpn(torchvision.models.resnet18(weights=None, norm_layer=norm_layer), trainable_layers,
                           fpn_channels)
    if name == "resnet50_fpn":
        return _resnet_fpn(torchvision.models.resnet50(weights=None, norm_layer=norm_layer), trainable_layers,
                           fpn_channels)
    if name == "resnet50_fpn_v2":
        # The v2 recipe keeps trainable BatchNorm in the backbone and adds it to the FPN.
        return _resnet_fpn(torchvision.models.resnet50(weights=None, norm_layer=norm_layer), trainable_layers,
                           fpn_channels, fpn_norm=nn.BatchNorm2d)
    if name == "mobilenet_v3_large_fpn":
        return mobilenet_backbone(backbone_name="mobilenet_v3_large", weights=None, fpn=True,
                                  norm_layer=norm_layer, trainable_layers=trainable_layers)
    return VGG16Conv5(trainable_layers)


def _resnet_fpn(resnet: torchvision.models.ResNet, trainable_layers: int, fpn_channels: int = 256,
                fpn_norm: type[nn.Module] | None = None) -> BackboneWithFPN:
    """C2-C5 of a ResNet into an FPN (256 channels by default) with an extra max-pooled level (P2-P6)."""
    if not 0 <= trainable_layers <= 5:
        raise ValueError(f"trainable_backbone_layers must be in 0..5 for ResNets, got {trainable_layers}")
    trained = ["layer4", "layer3", "layer2", "layer1", "conv1"][:trainable_layers]
    if trainable_layers == 5:
        trained.append("bn1")
    for param_name, parameter in resnet.named_parameters():
        if not any(param_name.startswith(prefix) for prefix in trained):
            parameter.requires_grad_(False)
    stage2 = resnet.inplanes // 8
    return BackboneWithFPN(
        resnet,
        return_layers={"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"},
        in_channels_list=[stage2, stage2 * 2, stage2 * 4, stage2 * 8],
        out_channels=fpn_channels,
        extra_blocks=LastLevelMaxPool(),
        norm_layer=fpn_norm,
    )


class VGG16Conv5(nn.Module):
    """VGG16 up to conv5_3 + ReLU (stride 16, 512 channels): the Faster R-CNN paper's backbone.

    ``body`` holds torchvision's ``vgg16().features`` without the last max pool, so an ImageNet
    VGG16 checkpoint's ``features.*`` weights load into ``body.*``.
    """

    # First conv index of blocks 1..5 in vgg16().features.
    BLOCK_STARTS = (0, 5, 10, 17, 24)

    def __init__(self, trainable_layers: int = 3):
        super().__init__()
        if not 0 <= trainable_layers <= 5:
            raise ValueError(f"trainable_backbone_layers must be in 0..5 for vgg16, got {trainable_layers}")
        self.body = torchvision.models.vgg16(weights=None).features[:-1]
        first_trained = self.BLOCK_STARTS[5 - trainable_layers] if trainable_layers else len(self.body)
        for index, layer in enumerate(self.body):
            if index < first_trained:
                layer.requires_grad_(False)
        self.out_channels = 512

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        return OrderedDict([("0", self.body(x))])
