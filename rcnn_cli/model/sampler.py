"""Balanced sampling of positive and negative candidates for the losses.

Shape shorthand: B: images; N: candidates per image (A anchors or P proposals).
"""

from __future__ import annotations

import torch
from torch import Tensor


class BalancedSampler:
    """Draws up to ``batch_size_per_image`` candidates per image, at most
    ``positive_fraction`` of them positive, filling the rest with negatives.

    Args:
        batch_size_per_image: RPN 256, box head 512.
        positive_fraction: RPN 0.5, box head 0.25.
    """

    def __init__(self, batch_size_per_image: int, positive_fraction: float):
        self.batch_size_per_image = batch_size_per_image
        self.positive_fraction = positive_fraction

    def __call__(self, labels: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """labels: (B, N) int with 1 positive, 0 negative, -1 ignored.

        Returns (positive, negative) masks, each (B, N) bool.
        """
        positive = labels == 1
        negative = labels == 0
        max_pos = int(self.batch_size_per_image * self.positive_fraction)
        num_pos = positive.sum(dim=1).clamp(max=max_pos)
        num_neg = negative.sum(dim=1).clamp(max=self.batch_size_per_image - num_pos)
        return (
            self._pick_random(positive, num_pos, generator),
            self._pick_random(negative, num_neg, generator),
        )

    @staticmethod
    def _pick_random(candidates: Tensor, counts: Tensor, generator: torch.Generator | None) -> Tensor:
        """candidates: (B, N) bool; counts: (B,) -> (B, N) bool with counts[b] True per row."""
        keys = torch.rand(candidates.shape, device=candidates.device, generator=generator)
        keys = keys.masked_fill(~candidates, -1.0)
        order = keys.argsort(dim=1, descending=True)
        ranks = torch.empty_like(order)
        ranks.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
        return candidates & (ranks < counts[:, None])
