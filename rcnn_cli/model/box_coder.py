"""Encoding of boxes as deltas from reference boxes (R-CNN parameterisation).

Shape shorthand: N: boxes (any leading shape ...); 4: (x1, y1, x2, y2) boxes or (dx, dy, dw, dh) deltas.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

# Largest log-scale step a decoded box may take: keeps exp() finite for untrained heads.
DEFAULT_SCALE_CLAMP = math.log(1000.0 / 16)


class BoxCoder:
    """(dx, dy, dw, dh) deltas, divided by ``weights`` as in Fast R-CNN.

    Args:
        weights: (wx, wy, ww, wh); (1, 1, 1, 1) for the RPN, (10, 10, 5, 5) for the box head.
        scale_clamp: upper bound on dw and dh before ``exp``.
    """

    def __init__(self, weights: tuple[float, float, float, float], scale_clamp: float = DEFAULT_SCALE_CLAMP):
        self.weights = tuple(float(w) for w in weights)
        self.scale_clamp = scale_clamp

    def encode(self, targets: Tensor, references: Tensor) -> Tensor:
        """targets, references: (..., 4) xyxy -> (..., 4) deltas taking references to targets."""
        wx, wy, ww, wh = self.weights
        ref_w = references[..., 2] - references[..., 0]
        ref_h = references[..., 3] - references[..., 1]
        ref_x = references[..., 0] + 0.5 * ref_w
        ref_y = references[..., 1] + 0.5 * ref_h
        gt_w = targets[..., 2] - targets[..., 0]
        gt_h = targets[..., 3] - targets[..., 1]
        gt_x = targets[..., 0] + 0.5 * gt_w
        gt_y = targets[..., 1] + 0.5 * gt_h
        dx = wx * (gt_x - ref_x) / ref_w
        dy = wy * (gt_y - ref_y) / ref_h
        dw = ww * torch.log(gt_w / ref_w)
        dh = wh * torch.log(gt_h / ref_h)
        return torch.stack((dx, dy, dw, dh), dim=-1)

    def decode(self, deltas: Tensor, references: Tensor) -> Tensor:
        """deltas: (..., 4k) for k box variants (e.g. classes); references: (..., 4) xyxy.

        Returns (..., k, 4) xyxy boxes.
        """
        # At least fp32: under bf16 autocast the deltas come in bf16, and a bf16 x2 of 800 px is
        # only good to 4 px.
        dtype = torch.promote_types(deltas.dtype, torch.float32)
        references = references.to(dtype)
        deltas = deltas.to(dtype).reshape(deltas.shape[:-1] + (-1, 4))
        wx, wy, ww, wh = self.weights
        widths = (references[..., 2] - references[..., 0])[..., None]
        heights = (references[..., 3] - references[..., 1])[..., None]
        ctr_x = references[..., 0, None] + 0.5 * widths
        ctr_y = references[..., 1, None] + 0.5 * heights
        dx = deltas[..., 0] / wx
        dy = deltas[..., 1] / wy
        dw = torch.clamp(deltas[..., 2] / ww, max=self.scale_clamp)
        dh = torch.clamp(deltas[..., 3] / wh, max=self.scale_clamp)
        pred_x = dx * widths + ctr_x
        pred_y = dy * heights + ctr_y
        half_w = 0.5 * (torch.exp(dw) * widths)
        half_h = 0.5 * (torch.exp(dh) * heights)
        return torch.stack((pred_x - half_w, pred_y - half_h, pred_x + half_w, pred_y + half_h), dim=-1)
