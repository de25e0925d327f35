"""Named pretrained weights: torchvision's COCO detectors for our presets and its ImageNet backbones.

Files are torchvision's own (its ``*_Weights`` enums name the URL, file name, hash and class
names), kept in the standard torch hub cache (``$TORCH_HOME/hub/checkpoints``) that every torch
tool on the machine shares, so a file fetched once, or copied there from another machine, is found.
Downloads are hash-checked as torchvision does and written whole or not at all; every file is read
with ``weights_only=True`` by ``weights.read_weights_file``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .weights import WeightsError

# Suffix that marks a name as COCO detection weights: ``resnet50_fpn.coco``.
COCO_SUFFIX = ".coco"


@dataclass(frozen=True)
class NamedWeights:
    name: str             # what users type: resnet50_fpn.coco, or the backbone for ImageNet weights
    preset: str           # the model preset the weights belong to
    enum: str             # torchvision enum member, e.g. "detection.FasterRCNN_ResNet50_FPN_Weights.COCO_V1"

    def weights(self):
        """The torchvision enum member (imported lazily: torchvision's models are slow to import)."""
        import torchvision.models as owner

        for part in self.enum.split("."):
            owner = getattr(owner, part)
        return owner

    @property
    def url(self) -> str:
        return self.weights().url

    @property
    def file_name(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @property
    def path(self) -> Path:
        return cache_dir() / self.file_name

    @property
    def class_names(self) -> list[str]:
        """Names of labels 1..C at torchvision's index layout (COCO: 90 slots, "N/A" for unused ids)."""
        return list(self.weights().meta["categories"][1:])

    @property
    def box_ap(self) -> float | None:
        return self.weights().meta.get("_metrics", {}).get("COCO-val2017", {}).get("box_map")

    @property
    def size_mb(self) -> float:
        return float(self.weights().meta.get("_file_size", 0.0))


DETECTION = {w.name: w for w in (
    NamedWeights("resnet50_fpn.coco", "resnet50_fpn", "detection.FasterRCNN_ResNet50_FPN_Weights.COCO_V1"),
    NamedWeights("resnet50_fpn_v2.coco", "resnet50_fpn_v2", "detection.FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1"),
    NamedWeights("mobilenet_v3_large_fpn.coco", "mobilenet_v3_large_fpn",
                 "detection.FasterRCNN_MobileNet_V3_Large_FPN_Weights.COCO_V1"),
    NamedWeights("mobilenet_v3_large_320_fpn.coco", "mobilenet_v3_large_320_fpn",
                 "detection.FasterRCNN_MobileNet_V3_Large_320_FPN_Weights.COCO_V1"),
)}
# model.backbone -> its ImageNet classification weights (model.backbone_weights=imagenet).
IMAGENET = {w.preset: w for w in (
    NamedWeights("resnet18.imagenet", "resnet18_fpn", "ResNet18_Weights.IMAGENET1K_V1"),
    NamedWeights("resnet50.imagenet", "resnet50_fpn", "ResNet50_Weights.IMAGENET1K_V1"),
    NamedWeights("resnet50.imagenet", "resnet50_fpn_v2", "ResNet50_Weights.IMAGENET1K_V1"),
    NamedWeights("mobilenet_v3_large.imagenet", "mobilenet_v3_large_fpn", "MobileNet_V3_Large_Weights.IMAGENET1K_V1"),
    NamedWeights("vgg16.imagenet", "vgg16", "VGG16_Weights.IMAGENET1K_V1"),
)}
# What `rcnn predict images/` runs without --weights (see docs/training.md, "Start from pretrained weights").
DEFAULT_WEIGHTS = "mobilenet_v3_large_320_fpn.coco"


def cache_dir() -> Path:
    """torch hub's checkpoint folder: $TORCH_HOME/hub/checkpoints (~/.cache/torch/hub/checkpoints)."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def is_named(weights: str | Path | None) -> bool:
    return isinstance(weights, str) and weights in DETECTION


def detection_weights(name: str) -> NamedWeights:
    if name not in DETECTION:
        import difflib

        near = difflib.get_close_matches(name, list(DETECTION), n=1)
        hint = f"did you mean {near[0]}?" if near else "named weights: " + ", ".join(DETECTION)
        raise WeightsError(f"no weights named {name!r} and no such file; {hint}")
    return DETECTION[name]


def backbone_weights(backbone: str) -> NamedWeights:
    if backbone not in IMAGENET:
        raise WeightsError(f"torchvision has no ImageNet weights for backbone {backbone}")
    return IMAGENET[backbone]


def looks_like_a_name(weights: str) -> bool:
    """``something.coco`` that is not a file: meant as a name (a typo gets the nearest name)."""
    return weights.endswith(COCO_SUFFIX) and not os.path.exists(weights)


def ensure_cached(named: NamedWeights, progress: bool = True) -> Path:
    """The cached file, downloaded (hash-checked, written whole or not at all) when missing.

    Without network: one line with the file name, its URL and the folder to put it in."""
    path = named.path
    if path.is_file():
        return path
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    hash_prefix = named.file_name.rsplit("-", 1)[-1].split(".")[0]
    try:
        # torch.hub downloads to a temp file beside the target and renames it once the hash matches.
        torch.hub.download_url_to_file(named.url, str(path), hash_prefix, progress=progress)
    except Exception as err:   # URLError, socket errors, hash mismatch: all end the same way for the user
        path.unlink(missing_ok=True)
        reason = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise WeightsError(f"{named.name} is not in the cache and could not be downloaded ({reason}); on a "
                           f"machine with network run `rcnn weights fetch {named.name}`, or download "
                           f"{named.url} and put {named.file_name} in {path.parent}") from None
    return path


def named_weights(name: str) -> NamedWeights:
    """Any name ``rcnn weights list`` shows: detection (``resnet50_fpn.coco``) or ImageNet (``resnet18.imagenet``)."""
    every = {**DETECTION, **{w.name: w for w in IMAGENET.values()}}
    if name not in every:
        import difflib

        near = difflib.get_close_matches(name, list(every), n=1)
        raise WeightsError(f"no weights named {name!r}; " + (f"did you mean {near[0]}?" if near else
                                                               "see `rcnn weights list`"))
    return every[name]


def read_named(named: NamedWeights) -> dict:
    """The cached file's contents (fetched first when missing); a truncated or foreign file in the
    cache is one line naming the file to delete."""
    from .weights import read_weights_file

    path = ensure_cached(named)
    try:
        return read_weights_file(path)
    except WeightsError as err:
        raise WeightsError(cached_file_problem(named, str(err).split(": ", 1)[-1])) from None


def cached_file_problem(named: NamedWeights, reason: str) -> str:
    """The message for a cached file that is truncated or belongs to another model."""
    return (f"{named.path} is not the {named.name} weights file ({reason}); delete it and run "
            f"`rcnn weights fetch {named.name}`")
