"""Boxes and class names drawn on a picture, readable on any background and image size."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Distinct, saturated colours (Okabe-Ito plus a few); label k uses PALETTE[k % len].
PALETTE = [(230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66), (0, 114, 178), (213, 94, 0),
           (204, 121, 167), (255, 0, 0), (0, 255, 0), (148, 0, 211)]


def draw_boxes(image: np.ndarray, boxes: np.ndarray, captions: Sequence[str], labels: Sequence[int]) -> Image.Image:
    """image: (H, W, 3) uint8; boxes: (N, 4) xyxy pixels; one caption and label per box."""
    picture = Image.fromarray(image)
    draw = ImageDraw.Draw(picture)
    width = max(1, round(max(picture.size) / 300))      # line width grows with the image
    font = ImageFont.load_default(size=max(10, 4 * width + 6))
    for box, caption, label in zip(np.asarray(boxes).tolist(), captions, labels):
        colour = PALETTE[int(label) % len(PALETTE)]
        draw.rectangle(box, outline=colour, width=width)
        left, top, right, bottom = draw.textbbox((box[0], box[1]), caption, font=font)
        y = box[1] - (bottom - top) - 2 if box[1] - (bottom - top) - 2 >= 0 else box[1]
        draw.rectangle([box[0], y, box[0] + (right - left) + 4, y + (bottom - top) + 2], fill=colour)
        draw.text((box[0] + 2, y), caption, fill=(0, 0, 0), font=font)
    return picture
