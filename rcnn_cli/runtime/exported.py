"""Running exported files: ``.onnx`` with onnxruntime, ``.torchscript`` with torch.jit.

Both take the images ``rcnn predict`` reads and return what the torch model returns, per image
``{"boxes": (N, 4) xyxy original pixels, "scores": (N,), "labels": (N,) int64 in 1..C}``.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import RcnnError

EXPORTED_SUFFIXES = (".onnx", ".torchscript")
TORCHSCRIPT_META = "rcnn_meta.json"     # the metadata file inside an exported .torchscript


class ExportError(RcnnError):
    """An exported file that cannot be read, with what to do about it."""


def _as_input(image: Tensor, input_dtype: str) -> Tensor:
    """(3, H, W) uint8 or float 0-1 -> the dtype the exported graph takes."""
    if input_dtype == "uint8":
        return image if image.dtype == torch.uint8 else (image.float() * 255).round().clamp(0, 255).to(torch.uint8)
    return image.float() / 255 if image.dtype == torch.uint8 else image.float()


class ExportedDetector:
    """Common part: metadata (class names, category ids, input dtype) and ``detect``."""

    def __init__(self, meta: dict[str, str], path: Path):
        try:
            self.class_names: list[str] = json.loads(meta["class_names"])
            self.category_ids: list[int] | None = json.loads(meta.get("category_ids", "null"))
            self.input_dtype = meta.get("input_dtype", "uint8")
            self.score_threshold = float(meta.get("score_threshold", 0.05))
        except (KeyError, ValueError) as err:
            raise ExportError(f"{path}: no rcnn-cli metadata ({err}); export it with `rcnn export`") from err

    def run_one(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        raise NotImplementedError

    def detect(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        """images: per image (3, H, W) uint8 or float in [0, 1]; one graph run per image."""
        results = []
        for image in images:
            boxes, scores, labels = self.run_one(_as_input(image.cpu(), self.input_dtype))
            results.append({"boxes": boxes, "scores": scores, "labels": labels.long()})
        return results


class OnnxDetector(ExportedDetector):
    """An exported ``.onnx`` file run by onnxruntime (CUDA provider when present and asked for)."""

    def __init__(self, path: str | Path, device: str = "cpu", threads: int | None = None):
        import onnxruntime as ort

        path = Path(path)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        providers = ["CPUExecutionProvider"]
        if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as err:  # onnxruntime raises its own untyped errors for bad files
            raise ExportError(f"{path}: not a readable ONNX model ({str(err).splitlines()[0]})") from err
        super().__init__(self.session.get_modelmeta().custom_metadata_map, path)

    def run_one(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        boxes, scores, labels = self.session.run(None, {"image": np.ascontiguousarray(image.numpy())})
        return torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(labels)


class TorchScriptDetector(ExportedDetector):
    """An exported ``.torchscript`` file (traced graph, no Python model code needed)."""

    def __init__(self, path: str | Path, device: str = "cpu"):
        path = Path(path)
        extra = {TORCHSCRIPT_META: ""}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)   # "jit is deprecated": still the format we ship
                self.module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
        except (RuntimeError, ValueError) as err:
            raise ExportError(f"{path}: not a readable TorchScript file ({str(err).splitlines()[0]})") from err
        super().__init__(json.loads(extra[TORCHSCRIPT_META] or "{}"), path)

    def run_one(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        with torch.inference_mode():
            return self.module(image)


def load_exported(path: str | Path, device: str = "cpu") -> ExportedDetector:
    """The runner for an exported file, chosen by its suffix."""
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        return OnnxDetector(path, device)
    if path.suffix.lower() == ".torchscript":
        return TorchScriptDetector(path, device)
    raise ExportError(f"{path}: exported files end in {' or '.join(EXPORTED_SUFFIXES)}")
