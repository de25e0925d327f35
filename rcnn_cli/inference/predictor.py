"""A ready-to-run detector for inference, from resolved settings: a checkpoint or torchvision file
built as ``cfg.model`` says and set to ``model.precision`` on ``device``, or an exported file run
by its runtime. ``rcnn predict``, ``rcnn export`` and the Python API all load through here."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from ..data.samples import Samples, sample_images
from ..errors import UsageError
from ..hardware import resolve_device
from ..model.source import WeightsSource
from .precision import Decision, Trial, cache_key, decide, measure
from .tta import refuse_exported_tta, with_tta

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
    decision: Decision | None = None       # what model.precision chose and why (inference/precision.py)
    # the model's data (``dataset`` as settings.resolve laid the stored one over conf/), or None when the
    # weights name none: where its check and calibration images come from
    dataset: dict[str, Any] | None = None
    members: list[Predictor] = field(default_factory=list)   # an ensemble's detectors (inference/ensemble.py)

    @property
    def category_ids(self) -> list[int] | None:
        return self.metadata.get("category_ids")


def load_predictor(cfg: DictConfig, checkpoint: tuple[dict, dict] | None = None,
                   calibration: Sequence[torch.Tensor] = (), class_names: list[str] | None = None,
                   prepare: bool = True, typed: Mapping[str, Any] | None = None,
                   sources: Sequence[str] | None = None, source: WeightsSource | None = None) -> Predictor:
    """cfg: the resolved root config (``model``, ``device``); checkpoint: the weights file already
    read by ``settings.resolve``. calibration: images for ``model.precision=int8``. prepare=False
    keeps the exact eager model whatever ``model.precision`` says (export traces that one).
    typed: what the user typed (``Settings.typed``): an exported file refuses ``model.*`` settings.
    sources: real images (--images, or the inputs) that a reduced precision is checked on when the
    model's own validation data is not on this machine (inference/precision.py). source: what
    ``cfg.model.weights`` names (``Settings.weights``, decided once by ``settings.resolve``)."""
    device = resolve_device(cfg.device)
    weights = cfg.model.weights
    precision = str(cfg.model.precision)
    dataset = model_dataset(cfg, checkpoint)
    samples = check_samples(dataset, sources)
    if source is not None and source.exported:
        if cfg.model.tta:
            refuse_exported_tta(str(weights))
        refuse_model_settings(str(weights), typed or {})
        return _exported_predictor(str(weights), device, precision, samples)
    from ..model.factory import create_detector

    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    loaded = create_detector(model_cfg, class_names, checkpoint=checkpoint)
    model = loaded.model.to(device).eval()
    predictor = Predictor(_detect_with(model, device), loaded.class_names, "fp32", device, model, loaded.config,
                          loaded.metadata, loaded.notes, None, dataset)
    if prepare:
        prepare_predictor(predictor, model_cfg, precision, calibration, samples)
    if cfg.model.tta:
        with_tta(predictor, cfg.model)
    return predictor


def prepare_predictor(predictor: Predictor, model_cfg: dict, precision: str,
                      calibration: Sequence[torch.Tensor] = (), samples: Callable[[], Samples] | None = None) -> None:
    """A torch predictor's model set to what ``precision`` runs (``prepare_model``), its decision cached per
    weights file and model settings; model_cfg: the resolved ``model`` settings."""
    key = cache_key(model_cfg["weights"], model_cfg, predictor.device.type)
    predictor.decision = prepare_model(predictor.model, precision, predictor.device, calibration, samples, key,
                                       len(predictor.class_names))
    predictor.runs_as = predictor.decision.runs_as


def eager_predictor(model, config: Mapping[str, Any], class_names: list[str]) -> Predictor:
    """A Predictor over a model already built and loaded (``rcnn benchmark``'s), run exact on its own
    device: what the export writers take."""
    device = next(model.parameters()).device
    return Predictor(_detect_with(model, device), list(class_names), "fp32", device, model, dict(config))


def model_dataset(cfg: DictConfig, checkpoint: tuple[dict, dict] | None) -> dict[str, Any] | None:
    """The data a checkpoint was trained on, as the resolved settings describe it (conf/'s defaults <
    the stored config < what was typed), or None when the weights name no data (torchvision files,
    exported ones)."""
    if not (checkpoint and checkpoint[1].get("dataset")):
        return None
    return OmegaConf.to_container(cfg.dataset, resolve=True)


def check_samples(dataset: dict | None, sources: Sequence[str] | None = None) -> Callable[[], Samples]:
    """The check images, read on first use only (most runs never need them) and then kept."""
    found: list[Samples] = []

    def samples() -> Samples:
        if not found:
            own = sample_images(None, dataset)
            if own or not sources:
                found.append(own)
            else:
                theirs = sample_images(sources, None)
                found.append(Samples(theirs.images, "inputs") if theirs else theirs)
        return found[0]

    return samples


def _exported_predictor(weights: str, device: torch.device, precision: str,
                        samples: Callable[[], Samples]) -> Predictor:
    """An exported file by its runtime; an OpenVINO IR's precision hint decided by the one rule."""
    from .exported import OpenVinoDetector, load_exported

    decision = None
    if weights.lower().endswith(".xml"):
        # one compiled runner per precision, kept: the one auto measures is the one that then runs
        runners: dict[str, OpenVinoDetector] = {}

        def runner(hint: str) -> OpenVinoDetector:
            if hint not in runners:    # several images in flight when a batch comes (predict, serve)
                runners[hint] = OpenVinoDetector(weights, str(device), hint, requests=0)
            return runners[hint]

        exact = runner("fp32")

        def trial() -> Trial:
            got = samples()
            return measure(exact.detect, runner("bf16").detect, got.images, len(exact.class_names),
                           exact.score_threshold, got.origin)

        decision = decide(precision, "cpu", samples, trial, cache_key(weights, {}, "cpu", "openvino"),
                          candidate=None if exact.quantized else "bf16", exact="fp32")
        exported = runner(decision.runs)
    else:
        exported = load_exported(weights, str(device), precision, requests=0)
    runs_as = exported.runs_as
    if decision is not None and decision.requested == "auto":      # "openvino auto: bf16"
        runs_as = f"{runs_as.rsplit(' ', 1)[0]} auto: {exported.hint}"
    return Predictor(exported.detect, exported.class_names, runs_as, device,
                     metadata={"category_ids": exported.category_ids}, decision=decision)


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


def prepare_model(model, precision: str, device: torch.device, calibration: Sequence[torch.Tensor] = (),
                  samples: Callable[[], Samples] | None = None, key: str | None = None, num_classes: int = 0
                  ) -> Decision:
    """Sets the model to what ``model.precision=precision`` runs, decided by the one rule
    (inference/precision.py), in place; returns the decision. samples: the real images a reduced path
    is checked on; key: the decision's cache key (None: not cached). The paths are compared above the
    score floor the model itself keeps (``model.box_score_thresh``, as it was built)."""
    import copy

    from .fast import prepare_for_inference

    if precision == "int8":
        if device.type != "cpu":
            raise UsageError("model.precision=int8 runs on the CPU; add device=cpu")
        if not calibration:
            raise UsageError("model.precision=int8 needs 8-16 of your images to calibrate on "
                             "(Python: detector.set_precision('int8', images))")
    model.eval()
    samples = samples or (lambda: Samples(origin="no images were given to check on"))
    num_classes = num_classes or model.roi_heads.box_predictor.cls_score.out_features - 1
    score_threshold = float(model.roi_heads.score_thresh)
    if precision == "auto":
        prepare_for_inference(model, "folded")     # auto's exact path: the same detections, faster

    def trial() -> Trial:
        got = samples()
        reduced = prepare_for_inference(copy.deepcopy(model), "bf16" if precision == "auto" else precision,
                                        calibration)
        return measure(_detect_with(model, device), _detect_with(reduced, device), got.images, num_classes,
                       score_threshold, got.origin)

    decision = decide(precision, device.type, samples, trial, key)
    if decision.runs != model.precision:
        prepare_for_inference(model, decision.runs, calibration)
    return decision


def _detect_with(model, device: torch.device) -> DetectFn:
    def detect(images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        with torch.inference_mode():
            return model([image.to(device) for image in images])

    return detect
