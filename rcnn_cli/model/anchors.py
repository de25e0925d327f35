"""Anchor boxes: k = len(sizes) x len(aspect_ratios) boxes centred on every feature-map cell.

Shape shorthand: L: feature levels; H_l, W_l: level l's size; k: anchors per location;
    A: anchors over all levels (the sum of H_l * W_l * k).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class AnchorGenerator(nn.Module):
    """Anchors for one or several feature maps (one entry per FPN level, or a single level).

    Args:
        sizes: per level, the anchor sizes in pixels (sqrt of the area), e.g. ((32,), (64,), ...)
            for an FPN or ((128, 256, 512),) for the paper's single VGG16 level.
        aspect_ratios: per level, the height/width ratios, e.g. ((0.5, 1.0, 2.0),) * 5.

    Same layout as torchvision (cell-major, then ratio, then size), so a head trained there
    predicts for the same anchor here.
    """

    def __init__(self, sizes: tuple[tuple[float, ...], ...], aspect_ratios: tuple[tuple[float, ...], ...]):
        super().__init__()
        if len(sizes) != len(aspect_ratios):
            raise ValueError(f"{len(sizes)} anchor size levels but {len(aspect_ratios)} ratio levels")
        self.sizes = tuple(tuple(s) for s in sizes)
        self.aspect_ratios = tuple(tuple(r) for r in aspect_ratios)
        self.cell_anchors = [self._cell_anchors(s, r) for s, r in zip(self.sizes, self.aspect_ratios)]
        self._cache: dict[tuple, Tensor] = {}

    @staticmethod
    def _cell_anchors(sizes: tuple[float, ...], ratios: tuple[float, ...]) -> Tensor:
        """(len(ratios) * len(sizes), 4) anchors centred on (0, 0), rounded to whole pixels."""
        scales = torch.as_tensor(sizes, dtype=torch.float32)
        ratios_t = torch.as_tensor(ratios, dtype=torch.float32)
        h_ratios = torch.sqrt(ratios_t)
        w_ratios = 1 / h_ratios
        ws = (w_ratios[:, None] * scales[None, :]).view(-1)
        hs = (h_ratios[:, None] * scales[None, :]).view(-1)
        return (torch.stack([-ws, -hs, ws, hs], dim=1) / 2).round()

    def num_anchors_per_location(self) -> list[int]:
        return [len(s) * len(r) for s, r in zip(self.sizes, self.aspect_ratios)]

    def forward(self, feature_shapes: list[tuple[int, int]], image_shape: tuple[int, int],
                device: torch.device, dtype: torch.dtype = torch.float32) -> Tensor:
        """feature_shapes: (H, W) per level; image_shape: padded batch (H, W).

        Returns (A, 4) xyxy anchors for all levels, shared by every image of the batch, where
        A = sum over levels of H * W * k.
        """
        key = (tuple(feature_shapes), tuple(image_shape), device, dtype)
        if key not in self._cache:
            if len(self._cache) > 32:
                self._cache.clear()
            self._cache[key] = torch.cat(
                [self.grid_anchors(cell, shape, image_shape, device, dtype)
                 for cell, shape in zip(self.cell_anchors, feature_shapes)]
            )
        return self._cache[key]

    @staticmethod
    def grid_anchors(cell: Tensor, feature_shape: tuple[int, int], image_shape: tuple[int, int],
                      device: torch.device, dtype: torch.dtype) -> Tensor:
        height, width = feature_shape
        stride_y = image_shape[0] // height
        stride_x = image_shape[1] // width
        shifts_x = torch.arange(0, width, dtype=torch.int32, device=device) * stride_x
        shifts_y = torch.arange(0, height, dtype=torch.int32, device=device) * stride_y
        shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
        shift_x, shift_y = shift_x.reshape(-1), shift_y.reshape(-1)
        shifts = torch.stack((shift_x, shift_y, shift_x, shift_y), dim=1)
        cell = cell.to(device=device, dtype=dtype)
        return (shifts.view(-1, 1, 4) + cell.view(1, -1, 4)).reshape(-1, 4)
