"""A ready-to-run detector for inference, from resolved settings: a checkpoint or torchvision file
built as ``cfg.model`` says and set to ``model.precision`` on ``device``, or an exported file run
by its runtime. ``rcnn predict``, ``rcnn export`` and the Python API all load through here."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from ..errors import UsageError
from .hardware import resolve_device

DetectFn = Callable[[list[torch.Tensor]], list[dict[str, torch.Tensor]]]


@dataclass
class Predictor:
    detect: DetectFn                       # per image (3, H, W) uint8/float -> {"boxes", "scores", "labels"}
    class_names: list[str]                 # label i -> class_names[i - 1]
    runs_as: str                           # what ran, for the user: "fp32", "auto: bf16", "onnx"
    device: torch.device
    model: Any = None                      # the FasterRCNN (None for exported files)
    config: dict[str, Any] = field(default_factory=dict)     # the resolved model config
    metadata: dict[str, Any] = field(default_factory=dict)   # what a project checkpoint stored
    notes: list[str] = field(default_factory=list)

    @property
    def category_ids(self) -> list[int] | None:
        return self.metadata.get("category_ids")


def load_predictor(cfg: DictConfig, checkpoint: tuple[dict, dict] | None = None,
                   calibration: Sequence[torch.Tensor] = (), class_names: list[str] | None = None,
                   prepare: bool = True, typed: Mapping[str, Any] | None = None) -> Predictor:
    """cfg: the resolved root config (``model``, ``device``); checkpoint: the weights file already
    read by ``settings.resolve``. calibration: images for ``model.precision=int8``. prepare=False
    keeps the exact eager model whatever ``model.precision`` says (export traces that one).
    typed: what the user typed (``Settings.typed``): an exported file refuses ``model.*`` settings."""
    device = resolve_device(cfg.device)
    weights = cfg.model.weights
    from .exported import is_exported, load_exported

    if is_exported(weights):
        refuse_model_settings(str(weights), typed or {})
        # several images in flight when a batch comes (predict --batch-size, serve's batches)
        exported = load_exported(weights, str(device), str(cfg.model.precision), requests=0)
        return Predictor(exported.detect, exported.class_names, exported.runs_as, device,
                         metadata={"category_ids": exported.category_ids})
    from ..model.factory import create_detector

    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    loaded = create_detector(model_cfg, class_names, checkpoint=checkpoint)
    model = loaded.model.to(device).eval()
    runs_as = "fp32"
    if prepare:
        runs_as = prepare_model(model, str(cfg.model.precision), calibration, device)
    return Predictor(_detect_with(model, device), loaded.class_names, runs_as, device, model, loaded.config,
                     loaded.metadata, loaded.notes)


def refuse_model_settings(weights: str, typed: Mapping[str, Any]) -> None:
    """An exported file runs as it was exported: a typed ``model.*`` value would be silently ignored,
    so it is refused. Precision is the exception where the runtime takes it: any for OpenVINO (its
    inference precision hint), ``auto`` or ``fp32`` (what they run) for the others."""
    for key, value in typed.items():
        key = key.lstrip("+")
        if not key.startswith("model.") or key == "model.weights":
            continue
        if key == "model.precision" and (weights.lower().endswith(".xml") or value in ("auto", "fp32")):
            continue
        raise UsageError(f"{key}={value}: an exported file runs as it was exported; export again with the "
                         "setting (rcnn export --weights CKPT ...), or use --conf for the score threshold")


def prepare_model(model, precision: str, calibration: Sequence[torch.Tensor], device: torch.device) -> str:
    """Sets the model to ``precision`` in place; returns what ran ("fp32", "bf16", "auto: folded")."""
    from .fast import prepare_for_inference

    if precision == "int8":
        if device.type != "cpu":
            raise UsageError("model.precision=int8 runs on the CPU; add device=cpu")
        if not calibration:
            raise UsageError("model.precision=int8 needs 8-16 of your images to calibrate on "
                             "(Python: detector.set_precision('int8', images))")
    prepare_for_inference(model, precision, list(calibration), device_type=device.type)
    return model.precision if precision == model.precision else f"{precision}: {model.precision}"


def _detect_with(model, device: torch.device) -> DetectFn:
    def detect(images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        with torch.inference_mode():
            return model([image.to(device) for image in images])

    return detect
