"""Training augmentations (albumentations), box-aware: boxes that leave the image are dropped
together with their labels and ignore flags."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

# albumentations asks the network for a newer version at import time; we run offline.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A  # noqa: E402

LABEL_FIELDS = ["labels", "ignore"]


def build_augment(cfg: Mapping[str, Any] | None, seed: int | None = None) -> A.Compose | None:
    """The pipeline an ``augment`` config describes, or None for ``augment=none``.

    Keys: hflip (probability), color_jitter (strength, 0 = off), scale ([low, high] zoom of the
    content on a fixed canvas, null = off), crop ({size, scale} random-resized crop, null = off),
    min_visibility (fraction of a box that must stay inside to keep it).
    """
    if cfg is None or cfg["name"] == "none":
        return None
    steps: list[A.BasicTransform] = []
    if cfg["crop"]:
        size = int(cfg["crop"]["size"])
        steps.append(A.RandomResizedCrop(size=(size, size), scale=tuple(cfg["crop"]["scale"]), p=1.0))
    if cfg["hflip"]:
        steps.append(A.HorizontalFlip(p=float(cfg["hflip"])))
    if cfg["scale"]:
        # The detector resizes every image to model.min_size, so only zooming the content on a
        # fixed canvas changes how large objects look to it.
        steps.append(A.Affine(scale=tuple(cfg["scale"]), keep_ratio=True, p=float(cfg["scale_p"]),
                              border_mode=0, fill=114))
    strength = float(cfg["color_jitter"])
    if strength:
        steps.append(A.ColorJitter(brightness=strength, contrast=strength, saturation=strength,
                                   hue=strength / 10, p=0.8))
    params = A.BboxParams(format="pascal_voc", label_fields=LABEL_FIELDS, clip=True,
                          min_visibility=float(cfg["min_visibility"]), min_area=1.0)
    return A.Compose(steps, bbox_params=params, seed=seed)
