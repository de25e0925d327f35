"""Network input preparation (normalise, resize, pad) and mapping detections back.

Shape shorthand: B: images; H, W: padded batch size (multiple of size_divisible); h_i, w_i: image i after resizing.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .structures import Detections, PaddedBoxes


def _as_float(image: Tensor) -> Tensor:
    """uint8 0-255 -> float 0-1; float images are taken as already in 0-1."""
    return image.float() / 255 if image.dtype == torch.uint8 else image


@dataclass
class ImageBatch:
    """tensor: (B, 3, H, W) normalised, zero-padded; image_sizes: (B, 2) resized (height, width)
    before padding; original_sizes: (B, 2) as given; targets: boxes in resized pixels."""

    tensor: Tensor
    image_sizes: Tensor
    original_sizes: Tensor
    targets: PaddedBoxes | None = None


class ImageTransform(nn.Module):
    """Normalise with ImageNet statistics, resize so the short side is ``min_size`` (long side at
    most ``max_size``), pad the batch to a multiple of ``size_divisible``.

    Args:
        min_size: short side; a list picks one at random per training batch (multi-scale).
        max_size: cap on the long side.
        image_mean, image_std: per-channel normalisation of [0, 1] RGB.
        size_divisible: batch padding multiple (32 suits every FPN stride).
    """

    def __init__(self, min_size: int | list[int], max_size: int, image_mean: list[float],
                 image_std: list[float], size_divisible: int = 32):
        super().__init__()
        self.min_size = tuple(min_size) if isinstance(min_size, (list, tuple)) else (min_size,)
        self.max_size = max_size
        self.size_divisible = size_divisible
        self.register_buffer("image_mean", torch.tensor(image_mean).view(3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(image_std).view(3, 1, 1), persistent=False)

    def forward(self, images: list[Tensor], targets: PaddedBoxes | None = None) -> ImageBatch:
        """images: per image (3, H, W), uint8 (0-255) or float (0-1), any sizes.

        targets, when given: boxes in original pixels; returned scaled to the resized images.
        Images of the same size are resized together in one call.
        """
        min_size = float(random.choice(self.min_size) if self.training else self.min_size[-1])
        resized: list[Tensor | None] = [None] * len(images)
        by_shape: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, image in enumerate(images):
            by_shape[tuple(image.shape[-2:])].append(i)
        for shape, indices in by_shape.items():
            group = torch.stack([_as_float(images[i]) for i in indices])
            for i, image in zip(indices, self._resize(self._normalize(group), shape, min_size)):
                resized[i] = image
        original_sizes = torch.tensor([list(img.shape[-2:]) for img in images], device=self.image_mean.device)
        image_sizes = torch.tensor([list(img.shape[-2:]) for img in resized], device=self.image_mean.device)
        if targets is not None:
            scale = image_sizes.float() / original_sizes.float()
            factors = torch.stack([scale[:, 1], scale[:, 0], scale[:, 1], scale[:, 0]], dim=1)
            targets = PaddedBoxes(targets.boxes * factors[:, None, :], targets.valid, targets.labels)
        return ImageBatch(self._pad(resized), image_sizes, original_sizes, targets)

    def _normalize(self, images: Tensor) -> Tensor:
        """(N, 3, H, W) float in [0, 1] -> normalised."""
        return (images - self.image_mean) / self.image_std

    def _resize(self, images: Tensor, shape: tuple[int, int], min_size: float) -> Tensor:
        """(N, 3, H, W) -> (N, 3, h, w), bilinear, same rounding as torchvision's transform."""
        return F.interpolate(images, scale_factor=self._scale(shape, min_size), mode="bilinear",
                             recompute_scale_factor=True, align_corners=False)

    def _scale(self, shape: tuple[int, int], min_size: float) -> float:
        short, long = float(min(shape)), float(max(shape))
        # Python-float division, as torchvision's eager path, so sizes round identically.
        return min(min_size / short, self.max_size / long)

    def input_size(self, shape: tuple[int, int]) -> tuple[int, int]:
        """The padded (H, W) an image of ``shape`` (height, width) enters the network at when it runs
        alone in eval mode: images of one input size batch together exactly as each runs alone
        (FasterRCNN runs other sizes apart, so that padding never changes an image's detections)."""
        scale = self._scale(shape, float(self.min_size[-1]))
        # F.interpolate's eager rounding of the output size (recompute_scale_factor=True): int(size * scale)
        return tuple(self._padded(int(side * scale)) for side in shape)

    def _padded(self, side: int) -> int:
        return int(math.ceil(side / self.size_divisible) * self.size_divisible)

    def _pad(self, images: list[Tensor]) -> Tensor:
        height = self._padded(max(img.shape[-2] for img in images))
        width = self._padded(max(img.shape[-1] for img in images))
        batch = images[0].new_zeros((len(images), 3, height, width))
        for slot, image in zip(batch, images):
            slot[:, : image.shape[-2], : image.shape[-1]].copy_(image)
        return batch

    @staticmethod
    def to_original(detections: Detections, batch: ImageBatch) -> Detections:
        """Scale detection boxes from resized to original image pixels."""
        ratio = batch.original_sizes.float() / batch.image_sizes.float()
        ratio = ratio[detections.image_index]
        factors = torch.stack([ratio[:, 1], ratio[:, 0], ratio[:, 1], ratio[:, 0]], dim=1)
        return Detections(detections.boxes * factors, detections.scores, detections.labels,
                          detections.image_index)
