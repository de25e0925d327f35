"""The RPN's small sliding network: 3x3 conv + ReLU, then two sibling 1x1 convs.

Shape shorthand: B: images; L: levels; k: anchors per location; A: anchors over all levels; v: 1 (sigmoid) or 2
    (softmax).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops.misc import Conv2dNormActivation

OBJECTNESS_MODES = ("sigmoid", "softmax")


class RPNHead(nn.Module):
    """Per anchor: objectness and 4 box deltas, at every location of every level.

    Args:
        in_channels: feature channels (256 for FPN, 512 for VGG16 conv5_3).
        num_anchors: k anchors per location.
        conv_depth: number of 3x3 conv layers (1 in the paper; 2 in torchvision's v2 model).
        objectness: ``sigmoid`` (k logits, torchvision's form) or ``softmax`` (2k logits,
            background/foreground per anchor, the paper's form).
        norm_layer: optional normalisation after each 3x3 conv.

    Module names follow torchvision's ``RPNHead`` so its weights load unchanged.
    """

    def __init__(self, in_channels: int, num_anchors: int, conv_depth: int = 1,
                 objectness: str = "sigmoid", norm_layer: type[nn.Module] | None = None):
        super().__init__()
        if objectness not in OBJECTNESS_MODES:
            raise ValueError(f"objectness must be one of {OBJECTNESS_MODES}, got {objectness!r}")
        self.objectness = objectness
        self.logits_per_anchor = 1 if objectness == "sigmoid" else 2
        self.conv = nn.Sequential(*[
            Conv2dNormActivation(in_channels, in_channels, kernel_size=3, norm_layer=norm_layer)
            for _ in range(conv_depth)
        ])
        self.cls_logits = nn.Conv2d(in_channels, num_anchors * self.logits_per_anchor, kernel_size=1)
        self.bbox_pred = nn.Conv2d(in_channels, num_anchors * 4, kernel_size=1)
        for layer in self.modules():
            if isinstance(layer, nn.Conv2d):
                nn.init.normal_(layer.weight, std=0.01)
                if layer.bias is not None:
                    nn.init.constant_(layer.bias, 0)

    def forward(self, features: list[Tensor]) -> tuple[Tensor, Tensor]:
        """features: per level (B, C, H, W).

        Returns objectness (B, A, 1 or 2) logits and deltas (B, A, 4), A = sum of H * W * k,
        ordered like ``AnchorGenerator``'s anchors.
        """
        return self._siblings_as_one(features) if self.training else self._per_module(features)

    def _per_module(self, features: list[Tensor]) -> tuple[Tensor, Tensor]:
        """``forward`` running the conv and each sibling 1x1 conv as its own module (inference)."""
        logits, deltas = [], []
        for feature in features:
            hidden = self.conv(feature)
            logits.append(_to_anchor_major(self.cls_logits(hidden), self.logits_per_anchor))
            deltas.append(_to_anchor_major(self.bbox_pred(hidden), 4))
        return torch.cat(logits, dim=1), torch.cat(deltas, dim=1)

    def _siblings_as_one(self, features: list[Tensor]) -> tuple[Tensor, Tensor]:
        """``forward`` with the two sibling 1x1 convs run as one (their weights concatenated): the hidden
        map is read once, and the backward computes one gradient of it instead of two and their sum, a
        pass over (B, C, H, W) per level saved each way. The same sums up to float rounding; the head's
        forward + backward 6-12% faster (measurements/rpn_head_backward.py; a whole step's noise hides
        it, docs/speed.md). Training only: inference keeps the two modules, which the bf16 path runs in
        different precisions and exports name."""
        weight = torch.cat([self.cls_logits.weight, self.bbox_pred.weight])
        bias = torch.cat([self.cls_logits.bias, self.bbox_pred.bias])
        split = self.cls_logits.out_channels
        logits, deltas = [], []
        for feature in features:
            both = F.conv2d(self.conv(feature), weight, bias)
            logits.append(_to_anchor_major(both[:, :split], self.logits_per_anchor))
            deltas.append(_to_anchor_major(both[:, split:], 4))
        return torch.cat(logits, dim=1), torch.cat(deltas, dim=1)

    def objectness_score(self, logits: Tensor) -> Tensor:
        """logits: (B, A, 1 or 2) -> (B, A), a logit whose sigmoid is P(object) in both modes."""
        if self.objectness == "sigmoid":
            return logits[..., 0]
        return logits[..., 1] - logits[..., 0]


def _to_anchor_major(x: Tensor, values_per_anchor: int) -> Tensor:
    """(B, k * v, H, W) -> (B, H * W * k, v), cell-major then anchor."""
    batch, _, height, width = x.shape
    x = x.view(batch, -1, values_per_anchor, height, width).permute(0, 3, 4, 1, 2)
    return x.reshape(batch, -1, values_per_anchor)
