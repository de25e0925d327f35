"""Batched containers passed between the model parts.

Images of a batch hold different numbers of boxes; we pad to the largest count and carry a
``valid`` mask, so that matching and sampling run as single batched ops.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class PaddedBoxes:
    """boxes: (B, N, 4) xyxy; valid: (B, N) bool; labels: (B, N) int64 (0 where absent)."""

    boxes: Tensor
    valid: Tensor
    labels: Tensor

    @classmethod
    def from_list(cls, boxes: list[Tensor], labels: list[Tensor] | None = None) -> PaddedBoxes:
        """boxes: per image (N_i, 4); labels: per image (N_i,).

        At least one (possibly invalid) slot per image, so that gathers by matched index work
        for batches without any box.
        """
        counts = torch.tensor([len(b) for b in boxes])
        batch, width = len(boxes), max(1, int(counts.max()) if len(boxes) else 0)
        device = boxes[0].device if boxes else torch.device("cpu")
        valid = torch.arange(width)[None, :] < counts[:, None]
        valid = valid.to(device)
        padded = torch.zeros((batch, width, 4), dtype=torch.float32, device=device)
        padded[valid] = torch.cat(boxes).to(torch.float32) if batch else padded[valid]
        padded_labels = torch.zeros((batch, width), dtype=torch.int64, device=device)
        if labels is not None and batch:
            padded_labels[valid] = torch.cat(labels).to(device=device, dtype=torch.int64)
        return cls(padded, valid, padded_labels)


@dataclass
class Proposals:
    """Per image, up to P region proposals. boxes: (B, P, 4) xyxy; scores: (B, P) in [0, 1];
    valid: (B, P) bool."""

    boxes: Tensor
    scores: Tensor
    valid: Tensor


@dataclass
class Detections:
    """All images' detections in one flat set, grouped by image, each image by decreasing score.

    boxes: (K, 4) xyxy; scores: (K,); labels: (K,) int64 in 1..C; image_index: (K,) int64.
    """

    boxes: Tensor
    scores: Tensor
    labels: Tensor
    image_index: Tensor

    def split(self, num_images: int) -> list[dict[str, Tensor]]:
        """Per image dicts with ``boxes``, ``scores``, ``labels`` (torchvision's output format)."""
        counts = torch.bincount(self.image_index, minlength=num_images).tolist()
        return [
            {"boxes": b, "scores": s, "labels": lab}
            for b, s, lab in zip(self.boxes.split(counts), self.scores.split(counts), self.labels.split(counts))
        ]


def scatter_to_padded(values: Tensor, groups: Tensor, num_groups: int, fill: float = 0.0) -> tuple[Tensor, Tensor]:
    """Lay out grouped rows as a padded batch.

    values: (K, ...) rows already grouped by ``groups`` (K,) in non-decreasing order ->
    (num_groups, max_count, ...) padded values and (num_groups, max_count) bool validity.
    """
    counts = torch.bincount(groups, minlength=num_groups)
    width = int(counts.max()) if groups.numel() else 0
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(groups.numel(), device=groups.device) - starts[groups]
    padded = values.new_full((num_groups, width) + values.shape[1:], fill)
    padded[groups, slot] = values
    valid = torch.zeros((num_groups, width), dtype=torch.bool, device=values.device)
    valid[groups, slot] = True
    return padded, valid
