"""A few real images of a model's own data: what the checks that prove a fast path run on, and
what int8 calibrates on. Chosen here once; rcnn export, predict, eval, serve, benchmark and the
Python API all take them from ``sample_images``.

Real means the user's: ``--images``, or the model's dataset (as stored in its checkpoint) where
that data is on this machine. There is no synthetic fallback: a check on pictures in which the
model detects nothing proves nothing (see inference/precision.py and export/verify.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from torch import Tensor

from ..errors import RcnnError

# How many images prove a fast path (agreement and speed-up) and calibrate int8: on the BCCD model,
# 8 calibration images gave int8 detections agreeing with fp32 at mAP50 0.979, 24 at 0.983.
CHECK_IMAGES = 8
CALIBRATION_IMAGES = 16
# int8's activation ranges come from training images (validation ones when there are none), so that its
# agreement, checked on validation images, is measured on pictures calibration did not see.
CALIBRATION_SPLITS = ("train", "val")


@dataclass
class Samples:
    images: list[Tensor] = field(default_factory=list)   # (3, H, W) uint8
    origin: str = ""          # "--images", "val images of bccd"; or why there are none

    def __bool__(self) -> bool:
        return bool(self.images)


def sample_images(sources: Sequence[str | Path] | None, dataset_cfg: dict | None, count: int = CHECK_IMAGES,
                  splits: Sequence[str] = ("val",)) -> Samples:
    """Up to ``count`` decodable images: from ``sources`` (files, folders, globs, lists) when given,
    else from the first of ``splits`` that has images in ``dataset_cfg``; none (with the reason in
    ``origin``) when neither gives any."""
    from .images import read_decodable_chw

    if sources:
        from .sources import expand_sources

        paths = expand_sources([str(s) for s in sources])[0][:count]
        images = read_decodable_chw(paths)
        return Samples(images, "--images" if images else f"no decodable image in {', '.join(map(str, sources))}")
    if not dataset_cfg:
        return Samples(origin="no --images, and the weights name no dataset")
    from omegaconf import OmegaConf

    from .readers.load import load_dataset

    name = dataset_cfg["name"]
    try:
        loaded = load_dataset(OmegaConf.create(dataset_cfg), tuple(splits)).splits
    except (RcnnError, OSError) as err:     # the model's data is not on this machine, or unusable here
        return Samples(origin=f"no --images, and the model's {name} data is not readable here ({err})")
    return first_split_images(loaded, splits, count, name)


def first_split_images(records_by_split, splits: Sequence[str], count: int, name: str) -> Samples:
    """Up to ``count`` decodable images of the first of ``splits`` that has any."""
    from .images import read_decodable_chw

    for split in splits:
        if records := records_by_split.get(split):
            images = read_decodable_chw([Path(r.path) for r in records[:count]])
            if images:
                return Samples(images, f"{split} images of {name}")
    return Samples(origin=f"no --images, and no {'/'.join(splits)} images of {name} decode here")


def calibration_images(sources: Sequence[str | Path] | None = None, dataset_cfg: dict | None = None,
                       records_by_split=None, name: str = "") -> Samples:
    """What int8 calibrates on, for every command: the images named (--images; predict's inputs), else
    the model's training images, else its validation ones. records_by_split: the splits already loaded
    (rcnn eval's), so that the annotations are not read twice."""
    if records_by_split is not None and not sources:
        return first_split_images(records_by_split, CALIBRATION_SPLITS, CALIBRATION_IMAGES, name)
    return sample_images(sources, dataset_cfg, CALIBRATION_IMAGES, CALIBRATION_SPLITS)
