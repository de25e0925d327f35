"""Per-region feature heads and the final class/box predictor.

Shape shorthand: R: regions over the batch; F: region feature width (representation_size); C: classes with background.
"""

from __future__ import annotations

from torch import Tensor, nn
from torchvision.ops.misc import Conv2dNormActivation


class TwoMLPHead(nn.Module):
    """Flatten, then fc6 + ReLU and fc7 + ReLU (1024 wide for FPN models, 4096 for VGG16).

    Args:
        in_features: C * 7 * 7 of the pooled regions.
        representation_size: width of fc6 and fc7.
    """

    def __init__(self, in_features: int, representation_size: int):
        super().__init__()
        self.fc6 = nn.Linear(in_features, representation_size)
        self.fc7 = nn.Linear(representation_size, representation_size)
        self.out_features = representation_size

    def forward(self, pooled: Tensor) -> Tensor:
        """pooled: (R, C, 7, 7) -> (R, representation_size)."""
        x = pooled.flatten(start_dim=1)
        return self.fc7(self.fc6(x).relu()).relu()


class ConvFCHead(nn.Sequential):
    """Convs (with normalisation) then fully connected layers, torchvision's v2 box head.

    Args:
        input_shape: (C, H, W) of the pooled regions.
        conv_channels: output channels of each 3x3 conv, e.g. [256] * 4.
        fc_sizes: widths of the fully connected layers, e.g. [1024].
        norm_layer: normalisation after each conv (BatchNorm2d in the v2 model).
    """

    def __init__(self, input_shape: tuple[int, int, int], conv_channels: list[int],
                 fc_sizes: list[int], norm_layer: type[nn.Module] | None = nn.BatchNorm2d):
        channels, height, width = input_shape
        layers: list[nn.Module] = []
        for out_channels in conv_channels:
            layers.append(Conv2dNormActivation(channels, out_channels, norm_layer=norm_layer))
            channels = out_channels
        layers.append(nn.Flatten())
        features = channels * height * width
        for size in fc_sizes:
            layers += [nn.Linear(features, size), nn.ReLU(inplace=True)]
            features = size
        super().__init__(*layers)
        self.out_features = features
        for layer in self.modules():
            if isinstance(layer, nn.Conv2d):
                nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
                if layer.bias is not None:
                    nn.init.zeros_(layer.bias)


class BoxPredictor(nn.Module):
    """Classifier over C + 1 classes (0 is background) and class-specific box deltas 4(C + 1).

    Names follow torchvision's ``FastRCNNPredictor`` so its weights load unchanged.
    """

    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        self.cls_score = nn.Linear(in_features, num_classes)
        self.bbox_pred = nn.Linear(in_features, num_classes * 4)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x: (R, F) -> class logits (R, C + 1) and deltas (R, 4(C + 1))."""
        return self.cls_score(x), self.bbox_pred(x)
