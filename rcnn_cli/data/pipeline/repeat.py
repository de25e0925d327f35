"""Repeat-factor sampling for rare classes (LVIS, Gupta et al. 2019; Detectron2's
RepeatFactorTrainingSampler): images that contain a rare class are shown more than once per epoch.

For a threshold t: f_c = the fraction of training images that contain class c, r_c = max(1, sqrt(t / f_c)),
and an image's factor r_i = the largest r_c over its classes (1 for an image without boxes). Each epoch
an image appears floor(r_i) times, plus once more with probability frac(r_i) (stochastic rounding).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..records import ImageRecord


@dataclass
class RepeatFactors:
    """per_class[c - 1]: r_c of label c; per_image[i]: r_i of record i; fractions[c - 1]: f_c."""

    fractions: np.ndarray
    per_class: np.ndarray
    per_image: np.ndarray

    @property
    def epoch_images(self) -> float:
        """The expected number of images per epoch (the sum of r_i)."""
        return float(self.per_image.sum())


def image_class_counts(records: Sequence[ImageRecord], num_classes: int, use_ignored: bool = False) -> np.ndarray:
    """(num_classes,) how many images contain each class (label c at index c - 1). Boxes marked ignore
    (VOC difficult, COCO iscrowd) count only when they are trained on (``use_ignored``)."""
    counts = np.zeros(num_classes, np.int64)
    for record in records:
        labels = record.labels if use_ignored else record.labels[~record.ignore]
        present = np.unique(labels)
        counts[present[(present >= 1) & (present <= num_classes)] - 1] += 1
    return counts


def repeat_factors(records: Sequence[ImageRecord], thresh: float, num_classes: int,
                   use_ignored: bool = False) -> RepeatFactors:
    """The LVIS rule above; a class absent from ``records`` gets r_c = 1 (it repeats nothing)."""
    counts = image_class_counts(records, num_classes, use_ignored)
    fractions = counts / max(len(records), 1)
    with np.errstate(divide="ignore"):
        per_class = np.where(counts > 0, np.maximum(1.0, np.sqrt(thresh / np.maximum(fractions, 1e-300))), 1.0)
    per_image = np.ones(len(records), np.float64)
    for i, record in enumerate(records):
        labels = record.labels if use_ignored else record.labels[~record.ignore]
        if labels.size:
            per_image[i] = per_class[labels - 1].max()
    return RepeatFactors(fractions, per_class, per_image)


def expand(per_image: Sequence[float], generator: torch.Generator) -> list[int]:
    """One epoch's image indices: index i floor(r_i) times plus once with probability frac(r_i),
    in index order (the caller shuffles). The same generator state gives the same list."""
    factors = torch.as_tensor(np.asarray(per_image, np.float64))
    whole = torch.floor(factors)
    counts = whole + (torch.rand(len(factors), generator=generator, dtype=torch.float64) < factors - whole)
    return torch.repeat_interleave(torch.arange(len(factors)), counts.long()).tolist()


def expected_batches(per_image: Sequence[float], keys: Sequence[bool], batch_size: int) -> int:
    """The batches of an epoch of expected length: per aspect-ratio group, round(sum of r_i) images
    in batches of ``batch_size`` (the last one partial)."""
    total = 0
    for key in set(keys):
        images = round(sum(r for r, k in zip(per_image, keys) if k == key))
        total += math.ceil(images / batch_size)
    return total
