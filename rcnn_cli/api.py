"""Python API: ``Detector.load(weights)`` or ``Detector(model=..., num_classes=...)``, then
``det.predict(images)``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from .data.images import read_chw, to_rgb_array
from .data.samples import CHECK_IMAGES
from .errors import UsageError
from .export.compiled import HINTS, load_fastest
from .inference.predictor import Predictor, check_samples, load_predictor, prepare_model
from .predict.ensemble import load_ensemble
from .predict.limits import PREDICT
from .settings.resolve import resolve

ImageLike = str | Path | Image.Image | np.ndarray | Tensor


class Detector:
    """A Faster R-CNN with its class names, ready to predict. Settings follow the same rule as the
    command line (``settings.resolve``): the checkpoint's stored config, then ``model``, then the
    keyword overrides; device and precision default to the config's ``auto``, as ``rcnn predict``.

    Args:
        model: preset name (``resnet18_fpn``, ``resnet50_fpn``, ``resnet50_fpn_v2``,
            ``mobilenet_v3_large_fpn``, ``mobilenet_v3_large_320_fpn``, ``vgg16``); None: the one
            conf/config.yaml names, as ``rcnn`` commands use (``rcnn config show`` prints it).
        num_classes: classes including background (torchvision's convention).
        class_names: names of labels 1..C (sets num_classes when that is not given).
        device: ``auto`` (the GPU when there is one), ``cpu``, ``cuda``, ``cuda:1``...
        precision: ``auto``, ``fp32`` (exact), ``bf16`` or ``int8`` (see ``set_precision``).
        **overrides: any ``model`` config key, e.g. ``min_size=512, box_score_thresh=0.3``.
    """

    def __init__(self, model: str | None = None, num_classes: int | None = None,
                 class_names: Sequence[str] | None = None, device: str | None = None,
                 precision: str | None = None, **overrides: Any):
        values = _values(overrides, device, precision, num_classes=num_classes)
        settings = resolve("predict", [f"model={model}"] if model else [], values)
        self._setup(load_predictor(settings.cfg, class_names=list(class_names) if class_names else None))

    @classmethod
    def load(cls, weights: str | Path | Sequence[str | Path], model: str | None = None, device: str | None = None,
             precision: str | None = None, **overrides: Any) -> Detector:
        """Load a project checkpoint, a torchvision ``fasterrcnn_*`` state_dict file, or an exported
        ``.onnx`` / ``.torchscript`` file; or an ensemble, as ``rcnn predict --weights`` takes it (a list
        of files, ``"a.ckpt,b.ckpt"`` or an ``ensemble.yaml``), whose detections are fused by weighted box fusion.

        The architecture comes from the checkpoint (project files) or from ``model`` / the file's
        keys (torchvision files); ``overrides`` change settings such as thresholds, e.g. ``tta=True``
        (test-time augmentation, as ``--tta``) or ``box_nms_agnostic=True``.
        """
        presets, values = [f"model={model}"] if model else [], _values(overrides, device, precision)
        self = cls.__new__(cls)
        settings = resolve("predict", presets, values, weights=weights)
        if settings.members:
            self._setup(load_ensemble(settings))
            self.notes = [note for member in settings.members for note in member.notes] + self.notes
            return self
        self._setup(load_fastest(settings.cfg, settings.checkpoint, typed=settings.typed, source=settings.weights))
        self.notes = settings.notes + self.notes
        return self

    def _setup(self, predictor: Predictor) -> None:
        self._predictor = predictor
        self.model = predictor.model
        self.class_names = predictor.class_names
        self.config = predictor.config
        self.notes = predictor.notes
        self.metadata = predictor.metadata   # what a project checkpoint stored (category ids, data config)
        self.device = predictor.device

    @property
    def runs_as(self) -> str:
        """What runs: ``fp32``, ``auto: folded``, ``auto: bf16``, ``int8``, ``onnx``..."""
        return self._predictor.runs_as

    def set_precision(self, precision: str = "auto", calibration: Sequence[ImageLike] = ()) -> str:
        """Run faster from now on, as ``rcnn predict --precision`` does, by the same rule
        (inference/precision.py): ``auto`` (folded BatchNorm, plus bf16 where this machine runs it
        natively, faster, and in agreement with the exact model on real images: the model's
        validation data, else ``calibration``), ``bf16``, ``int8`` (CPU; ``calibration``: 8-16 of
        your images) or ``fp32``. Returns what runs; ``self.precision_decision.line()`` says why.
        One way: load the detector again with ``precision="fp32"`` to go back to the exact model."""
        from .data.samples import Samples
        from .inference.precision import cache_key

        if self._predictor.members:
            raise UsageError("an ensemble's precision is chosen when it is loaded: load it again with "
                             f"Detector.load(weights, precision={precision!r})")
        if self.model is None and self._predictor.decision is not None and self._predictor.decision.runs in HINTS:
            raise UsageError(f"this detector runs {self.runs_as} (compiled from the checkpoint); load it again with "
                             f"Detector.load(weights, precision={precision!r})")
        if self.model is None:
            raise UsageError("an exported file runs as it was exported; load it again with "
                             f"Detector.load(path, precision={precision!r}) (OpenVINO files take fp32, bf16, auto)")
        if self.model.precision not in ("fp32", "folded") and precision != self.model.precision:
            raise UsageError(f"this detector already runs {self.model.precision}; load it again with "
                             f"Detector.load(weights, precision={precision!r})")
        images = [to_chw_tensor(image) for image in calibration]
        own = check_samples(self._predictor.dataset)

        def samples() -> Samples:
            found = own()
            return found if found or not images else Samples(images[:CHECK_IMAGES], "calibration images")

        decision = prepare_model(self.model, precision, self.device, images, samples,
                                 cache_key(self.config["weights"], dict(self.config), self.device.type),
                                 len(self.class_names))
        self._predictor.decision = decision
        added = self._predictor.runs_as.partition(" + ")[2]          # " + TTA (6 views)" stays said
        self._predictor.runs_as = decision.runs_as + (f" + {added}" if added else "")
        return self.model.precision

    @property
    def precision_decision(self):
        """What ``precision`` chose and why, with its measured figures (inference/precision.Decision)."""
        return self._predictor.decision

    @torch.inference_mode()
    def predict(self, images: ImageLike | Sequence[ImageLike], batch_size: int = PREDICT.batch_size
                ) -> list[dict[str, Any]]:
        """Detect objects. images: one or a list of paths, PIL images, HxWxC uint8 arrays or
        CxHxW tensors (uint8, or float in [0, 1]).

        Returns per image ``{"boxes": (N, 4) xyxy float in original pixels, "scores": (N,),
        "labels": (N,) int64, "names": list of N class names}``. batch_size: images per call; an image
        gets the same detections at any batch size (images of other input sizes run apart, as in
        ``rcnn predict``; docs/predict-and-serve.md#batch-size-and-results).
        """
        single = not isinstance(images, (list, tuple))
        items = [images] if single else list(images)
        results = []
        for start in range(0, len(items), batch_size):
            batch = [to_chw_tensor(item) for item in items[start:start + batch_size]]
            for detection in self._predictor.detect(batch):
                detection = {k: v.cpu() for k, v in detection.items()}
                detection["names"] = [self.class_names[i - 1] for i in detection["labels"].tolist()]
                results.append(detection)
        return results[0] if single else results


def _values(overrides: dict[str, Any], device: str | None, precision: str | None, **model: Any) -> dict[str, Any]:
    """Keyword arguments as settings values; None means "the config's own" (not an override)."""
    values = {f"model.{key}": value for key, value in {**overrides, **model}.items() if value is not None}
    if device is not None:
        values["device"] = device
    if precision is not None:
        values["model.precision"] = precision
    return values


def to_chw_tensor(image: ImageLike) -> Tensor:
    """Any supported image -> (3, H, W) tensor (uint8, or float as given). Paths and PIL images go
    through the decoder training and ``rcnn predict`` use (EXIF orientation applied, transparency on
    white, 16-bit scaled), so the same file gives the same pixels on every path."""
    if isinstance(image, (str, Path)):
        return read_chw(image)
    if isinstance(image, Image.Image):
        image = to_rgb_array(image)
    if isinstance(image, np.ndarray):
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        if image.ndim != 3 or image.shape[2] not in (3, 4):
            raise ValueError(f"expected an HxWx3 image array, got shape {image.shape}")
        return torch.from_numpy(np.array(image[..., :3])).permute(2, 0, 1)
    if isinstance(image, Tensor):
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"expected a 3xHxW image tensor, got shape {tuple(image.shape)}")
        return image
    raise TypeError(f"unsupported image type {type(image).__name__}")


def cross_validate(folds: int, overrides: Sequence[str] = (), config_dir: str | Path | None = None):
    """``rcnn train --folds K [overrides]``: K-fold cross-validation (commands/crossval.py), the same
    settings rule, folders and resume (name the folder with ``run_dir=`` and call again to continue).
    Returns a CrossValResult: ``run_dir``, ``folds`` (per fold: run folder, best checkpoint, metrics),
    ``summary`` (metric -> mean, sample std, folds) and ``ensemble`` (the ensemble.yaml path)."""
    from .commands.crossval import cross_validate as run

    return run([*overrides, f"dataset.folds={folds}"], Path(config_dir) if config_dir else None)


def label_issues(weights: str | Path, overrides: Sequence[str] = (), out: str | Path | None = None,
                 config_dir: str | Path | None = None) -> list:
    """``rcnn data check --weights W [overrides] --out OUT``'s likely label errors: every image of the
    checkpoint's data (or the data the overrides name) detected with it, the labelled boxes and images
    most likely wrong ranked first (eval/label_issues.py), written as label_issues.json and .csv and a
    gallery in report.html in ``out``. Returns the LabelIssue list, likeliest first."""
    from .commands import default_output
    from .commands.check import CHECK_FOLDER, _progress, all_splits
    from .commands.label_issues import check_labels

    settings = resolve("check", list(overrides), weights=str(weights), config_dir=config_dir)
    out = Path(out) if out else default_output(settings.cfg, CHECK_FOLDER)
    return check_labels(settings, all_splits(settings.cfg), out, _progress)
