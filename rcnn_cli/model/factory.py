"""From a ``model`` config (and optional weight files) to a ready detector."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from omegaconf import OmegaConf
from torchvision.models._meta import _COCO_CATEGORIES

from . import zoo
from .backbones import MAX_TRAINABLE_LAYERS
from .faster_rcnn import FasterRCNN, build_model
from .source import WeightsSource, weights_source
from .weights import (
    WeightsError,
    load_backbone_weights,
    load_detector_weights,
    num_classes_in,
    read_weights_file,
    split_checkpoint,
    uses_trainable_bn,
)

# Trainable stages with pretrained weights, as torchvision's builders default to.
PRETRAINED_TRAINABLE_LAYERS = 3


@dataclass
class LoadedDetector:
    model: FasterRCNN
    class_names: list[str]          # label i -> class_names[i - 1]
    config: dict[str, Any]          # the resolved model config
    notes: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)   # what a project checkpoint stored


def read_checkpoint(path: str) -> tuple[dict, dict]:
    """(state_dict, project metadata) of a weights file; metadata is {} for torchvision files."""
    return split_checkpoint(read_weights_file(path), path)


def create_detector(cfg: Mapping[str, Any], class_names: list[str] | None = None,
                    finetune: bool = False, checkpoint: tuple[dict, dict] | None = None) -> LoadedDetector:
    """Build the detector ``cfg`` describes and load ``cfg.weights`` / ``cfg.backbone_weights``.

    The number of classes comes from, in order: ``cfg.num_classes``, ``class_names``, the weights
    file. ``finetune`` lets weights with another class count load with a fresh predictor.
    checkpoint: ``read_checkpoint(cfg.weights)`` when the caller already read it.
    """
    # Plain values from here on: an OmegaConf ListConfig (model.min_size=[480,512]) is not a list.
    cfg = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg)
    state, meta = None, {}
    named = zoo.DETECTION.get(cfg["weights"]) if isinstance(cfg["weights"], str) else None
    if cfg["weights"]:
        state, meta = checkpoint or read_weights_source(cfg["weights"])
    if not finetune:
        class_names = class_names or meta.get("class_names") or (named.class_names if named else None)
    num_classes = _resolve_num_classes(cfg, class_names, state)
    pretrained = bool(state is not None or cfg["backbone_weights"])
    cfg["norm"] = _resolve_norm(cfg["norm"], cfg["backbone"], state if named is None else None, pretrained)
    if cfg["trainable_backbone_layers"] is None:
        cfg["trainable_backbone_layers"] = (PRETRAINED_TRAINABLE_LAYERS if pretrained
                                            else MAX_TRAINABLE_LAYERS[cfg["backbone"]])
    cfg["num_classes"] = num_classes
    model = build_model(cfg, num_classes)
    notes: list[str] = []
    if cfg["backbone_weights"]:
        load_backbone_weights(model, *_backbone_source(cfg))
    if state is not None:
        try:
            notes += load_detector_weights(model, state, cfg["name"], cfg["backbone"], reinit_predictor=finetune)
        except WeightsError as err:
            raise WeightsError(zoo.cached_file_problem(named, str(err)) if named else str(err)) from None
    names = list(class_names) if class_names else _default_names(num_classes)
    return LoadedDetector(model, names, cfg, notes, meta)


def read_weights_source(weights: str | WeightsSource) -> tuple[dict, dict]:
    """(state_dict, metadata) of ``model.weights``: a file, or a name of torchvision's COCO weights
    (``resnet50_fpn.coco``); what it names is decided by ``weights_source`` (once, in ``settings.resolve``)."""
    source = weights if isinstance(weights, WeightsSource) else weights_source(weights)
    if source.named:
        return split_checkpoint(zoo.read_named(source.named), source.named.path)
    return read_checkpoint(source.given)


def _backbone_source(cfg: dict[str, Any]) -> tuple[dict, str, str]:
    """(state, backbone, where it came from) for ``model.backbone_weights``: a file, or ``imagenet``."""
    if cfg["backbone_weights"] == "imagenet":
        named = zoo.backbone_weights(cfg["backbone"])
        return zoo.read_named(named), cfg["backbone"], str(named.path)
    return read_weights_file(cfg["backbone_weights"]), cfg["backbone"], cfg["backbone_weights"]


def _resolve_num_classes(cfg: Mapping[str, Any], class_names: list[str] | None, state) -> int:
    if cfg["num_classes"]:
        return int(cfg["num_classes"])
    if class_names:
        return len(class_names) + 1
    if state is not None and num_classes_in(state):
        return num_classes_in(state)
    raise WeightsError("the number of classes is unknown: set model.num_classes (with background) "
                       "or give class names")


def _resolve_norm(norm: str, backbone: str, file_state, pretrained: bool) -> str:
    """``auto`` is torchvision's pretrained rule, written once: frozen statistics for pretrained
    weights (named COCO weights, ImageNet backbones), trainable BatchNorm from random weights, and
    the v2 recipe's trainable BatchNorm always. A detection file from elsewhere (``file_state``)
    keeps the norm it was saved with: torchvision saves ``num_batches_tracked`` only for BatchNorm
    that trains."""
    if norm != "auto":
        return norm
    if not pretrained or backbone == "resnet50_fpn_v2":
        return "bn"
    if file_state is not None and uses_trainable_bn(file_state):
        return "bn"
    return "frozen_bn"


def _default_names(num_classes: int) -> list[str]:
    """COCO names for torchvision's 91-class models, otherwise ``class_1``..."""
    if num_classes == len(_COCO_CATEGORIES):
        return list(_COCO_CATEGORIES[1:])
    return [f"class_{i}" for i in range(1, num_classes)]
