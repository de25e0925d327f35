"""Running exported files: ``.onnx`` with onnxruntime, ``.torchscript`` with torch.jit, ``.xml``
(OpenVINO IR, its weights in the ``.bin`` beside it) with OpenVINO.

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

EXPORTED_SUFFIXES = (".onnx", ".torchscript", ".xml")
TORCHSCRIPT_META = "rcnn_meta.json"     # the metadata file inside an exported .torchscript
OPENVINO_META = "rcnn"                  # the rt_info section of an exported .xml holding the metadata
METADATA_KEYS = ("producer", "class_names", "category_ids", "input_dtype", "score_threshold", "model")
# model.precision -> OpenVINO's INFERENCE_PRECISION_HINT; auto as for torch models (bf16 where the
# CPU runs it natively, see hardware.has_native_bf16; emulated bf16 is slower than f32)
OPENVINO_HINTS = {"fp32": "f32", "bf16": "bf16"}


class ExportError(RcnnError):
    """An exported file that cannot be read, with what to do about it."""


def _as_input(image: Tensor, input_dtype: str) -> Tensor:
    """(3, H, W) uint8 or float 0-1 -> the dtype the exported graph takes."""
    if input_dtype == "uint8":
        return image if image.dtype == torch.uint8 else (image.float() * 255).round().clamp(0, 255).to(torch.uint8)
    return image.float() / 255 if image.dtype == torch.uint8 else image.float()


class ExportedDetector:
    """Common part: metadata (class names, category ids, input dtype) and ``detect``."""

    runs_as = "exported"     # what ran, for the user

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
        self.runs_as = "onnx"

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
        self.runs_as = "torchscript"

    def run_one(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        with torch.inference_mode():
            return self.module(image)


class OpenVinoDetector(ExportedDetector):
    """An exported OpenVINO IR (``.xml`` + ``.bin``) on the CPU, at ``precision`` (``model.precision``:
    auto, fp32 or bf16) as OpenVINO's inference precision hint."""

    def __init__(self, path: str | Path, device: str = "cpu", precision: str = "auto"):
        import openvino as ov

        from .hardware import has_native_bf16

        path = Path(path)
        if precision not in ("auto", *OPENVINO_HINTS):
            raise ExportError(f"model.precision={precision}: an OpenVINO file runs at auto, fp32 or bf16")
        if not device.startswith("cpu"):
            raise ExportError(f"device={device}: OpenVINO files run on the CPU here; use device=cpu")
        core = ov.Core()
        try:
            model = core.read_model(str(path))
        except Exception as err:   # OpenVINO raises RuntimeError for a bad or half file
            raise ExportError(f"{path}: not a readable OpenVINO model ({str(err).strip().splitlines()[0][:200]}); "
                              f"it needs {path.with_suffix('.bin').name} beside it") from err
        self.quantized = any(op.get_type_name() == "FakeQuantize" for op in model.get_ops())
        # An int8 IR (rcnn export --int8) was verified with its float parts (box decoding, NMS, box
        # head) at f32, and gets its speed from int8 already: auto keeps those parts f32.
        native = has_native_bf16() and not self.quantized
        self.hint = OPENVINO_HINTS.get(precision) or ("bf16" if native else "f32")
        kind = "openvino int8" if self.quantized else "openvino"
        self.runs_as = f"{kind} auto: {self.hint}" if precision == "auto" else f"{kind} {self.hint}"
        meta = {key: str(model.get_rt_info([OPENVINO_META, key]).astype(str)) for key in METADATA_KEYS
                if model.has_rt_info([OPENVINO_META, key])}
        super().__init__(meta, path)
        self.compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": self.hint})
        self.request = self.compiled.create_infer_request()

    def run_one(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        outputs = self.request.infer({0: np.ascontiguousarray(image.numpy())})
        boxes, scores, labels = (outputs[self.compiled.output(name)] for name in ("boxes", "scores", "labels"))
        return torch.from_numpy(boxes.copy()), torch.from_numpy(scores.copy()), torch.from_numpy(labels.copy())


def exported_size(path: str | Path) -> int:
    """Bytes of an exported file with what it needs beside it (an OpenVINO .xml's weights .bin)."""
    path = Path(path)
    companion = path.with_suffix(".bin")
    extra = companion.stat().st_size if path.suffix.lower() == ".xml" and companion.is_file() else 0
    return path.stat().st_size + extra


def load_exported(path: str | Path, device: str = "cpu", precision: str = "auto") -> ExportedDetector:
    """The runner for an exported file, chosen by its suffix; ``precision`` applies to OpenVINO."""
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        return OnnxDetector(path, device)
    if path.suffix.lower() == ".torchscript":
        return TorchScriptDetector(path, device)
    if path.suffix.lower() == ".xml":
        return OpenVinoDetector(path, device, precision)
    raise ExportError(f"{path}: exported files end in {', '.join(EXPORTED_SUFFIXES)}")
