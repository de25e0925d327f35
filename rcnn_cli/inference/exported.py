"""Running exported files: ``.onnx`` with onnxruntime, ``.torchscript`` with torch.jit, ``.xml``
(OpenVINO IR, its weights in the ``.bin`` beside it) with OpenVINO.

Both take the images ``rcnn predict`` reads and return what the torch model returns, per image
``{"boxes": (N, 4) xyxy original pixels, "scores": (N,), "labels": (N,) int64 in 1..C}``.
"""

from __future__ import annotations

import json
import queue
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import RcnnError
from ..formats import SUFFIXES, companions_of, format_of
from ..hardware import cpu_count

TORCHSCRIPT_META = "rcnn_meta.json"     # the metadata file inside an exported .torchscript
OPENVINO_META = "rcnn"                  # the rt_info section of an exported .xml holding the metadata
METADATA_KEYS = ("producer", "class_names", "category_ids", "input_dtype", "score_threshold", "model")
REQUIRED_METADATA = ("class_names", "input_dtype", "score_threshold")   # what running the file needs
# The precision an IR runs at -> OpenVINO's INFERENCE_PRECISION_HINT, always given explicitly: on a CPU
# with native bf16 OpenVINO's own default is bf16. Which one model.precision=auto runs is decided by
# inference/precision.py, like a torch model's.
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
    in_flight = 1            # images run at once by ``detect`` (the graph takes one image per run)

    def __init__(self, meta: dict[str, str], path: Path):
        # Every file rcnn export has written carries these. A file without one was not written by it (or was
        # edited): a guessed input type or score floor (the one its graph applies) would be silently wrong.
        if missing := [key for key in REQUIRED_METADATA if key not in meta]:
            raise ExportError(f"{path}: no rcnn-cli metadata ({', '.join(missing)} missing); export it with "
                              "`rcnn export`")
        try:
            self.class_names: list[str] = json.loads(meta["class_names"])
            self.category_ids: list[int] | None = json.loads(meta.get("category_ids", "null"))   # null: not known
            self.input_dtype = meta["input_dtype"]
            self.score_threshold = float(meta["score_threshold"])
        except ValueError as err:
            raise ExportError(f"{path}: unreadable rcnn-cli metadata ({err}); export it with `rcnn export`") from err

    def run_one(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        raise NotImplementedError

    def detect(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        """images: per image (3, H, W) uint8 or float in [0, 1]; one graph run per image, up to
        ``in_flight`` of them at once (the runtimes release the GIL while they run)."""
        def one(image: Tensor) -> dict[str, Tensor]:
            boxes, scores, labels = self.run_one(_as_input(image.cpu(), self.input_dtype))
            return {"boxes": boxes, "scores": scores, "labels": labels.long()}

        if self.in_flight <= 1 or len(images) <= 1:
            return [one(image) for image in images]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(min(self.in_flight, len(images))) as pool:
            results = list(pool.map(one, images))
        return results


class OnnxDetector(ExportedDetector):
    """An exported ``.onnx`` file run by onnxruntime (CUDA provider when present and asked for)."""

    def __init__(self, path: str | Path, device: str = "cpu", threads: int | None = None, requests: int = 1,
                 profile_prefix: Path | None = None):
        """profile_prefix: onnxruntime's profiler on, its trace written to ``<prefix>_<time>.json``
        (``session.end_profiling()`` names it; benchmark/exported_profile.py reads it)."""
        import onnxruntime as ort

        path = Path(path)
        options = ort.SessionOptions()
        if profile_prefix is not None:
            options.enable_profiling, options.profile_file_prefix = True, str(profile_prefix)
        self.in_flight = requests or auto_requests()
        if threads or self.in_flight > 1:   # concurrent runs share the cores instead of each taking all
            options.intra_op_num_threads = threads or max(1, cpu_count() // self.in_flight)
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
        import torchvision  # noqa: F401  registers torchvision::roi_align and nms, which the graph calls

        path = Path(path)
        meta = _torchscript_meta(path)
        super().__init__(meta, path)
        # A file traced on the GPU (export --half) records that device in its graph: it runs there only.
        self.device = torch.device(meta.get("device", "cpu"))
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ExportError(f"{path}: an fp16 GPU file (export --half) and no CUDA device is visible here; "
                              "export without --half for the CPU")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)   # "jit is deprecated": still the format we ship
                self.module = torch.jit.load(str(path), map_location=self.device)
        except (RuntimeError, ValueError) as err:
            raise ExportError(f"{path}: not a readable TorchScript file ({_first_line(err)})") from err
        self.runs_as = "torchscript fp16 backbone, cuda" if meta.get("backbone_dtype") == "float16" else "torchscript"

    def run_one(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        with torch.inference_mode():
            return tuple(output.cpu() for output in self.module(image.to(self.device)))


def _torchscript_meta(path: Path) -> dict[str, str]:
    """The metadata inside a .torchscript archive (a zip: <name>/extra/rcnn_meta.json), read
    without loading the graph, so the graph can be loaded onto the device it was traced on."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.endswith(f"/extra/{TORCHSCRIPT_META}")]
            return json.loads(archive.read(names[0])) if names else {}
    except (OSError, zipfile.BadZipFile, ValueError) as err:
        raise ExportError(f"{path}: not a readable TorchScript file ({_first_line(err)})") from err


def _first_line(err: Exception) -> str:
    """The first line that says something (torch's loader errors begin with an empty one)."""
    return next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)[:300]


class OpenVinoDetector(ExportedDetector):
    """An exported OpenVINO IR (``.xml`` + ``.bin``) on the CPU, at ``precision`` (``model.precision``:
    auto, fp32 or bf16) as OpenVINO's inference precision hint."""

    def __init__(self, path: str | Path, device: str = "cpu", precision: str = "fp32", requests: int = 1,
                 perf_count: bool = False):
        """perf_count: OpenVINO's per-layer counters on (``last_profile``)."""
        import openvino as ov

        path = Path(path)
        if precision not in OPENVINO_HINTS:
            raise ExportError(f"an OpenVINO file runs at {' or '.join(OPENVINO_HINTS)}, not {precision!r} "
                              "(model.precision=auto is decided by inference/precision.py)")
        if not device.startswith("cpu"):
            raise ExportError(f"device={device}: OpenVINO files run on the CPU here; use device=cpu")
        core = ov.Core()
        try:
            model = core.read_model(str(path))
        except Exception as err:   # OpenVINO raises RuntimeError for a bad or half file
            raise ExportError(f"{path}: not a readable OpenVINO model ({str(err).strip().splitlines()[0][:200]}); "
                              f"it needs {path.with_suffix('.bin').name} beside it") from err
        # An int8 IR (rcnn export --int8) gets its speed from int8 already and was verified with its float
        # parts (box decoding, NMS, box head) at f32.
        self.quantized = any(op.get_type_name() == "FakeQuantize" for op in model.get_ops())
        self.hint = OPENVINO_HINTS[precision]
        self.runs_as = f"{'openvino int8' if self.quantized else 'openvino'} {self.hint}"
        meta = {key: str(model.get_rt_info([OPENVINO_META, key]).astype(str)) for key in METADATA_KEYS
                if model.has_rt_info([OPENVINO_META, key])}
        super().__init__(meta, path)
        # requests=0: OpenVINO's throughput mode picks the streams and how many requests keep them busy
        config = {"INFERENCE_PRECISION_HINT": self.hint}
        if self.hint == "f32":     # and no other lowering of precision either
            config["EXECUTION_MODE_HINT"] = "ACCURACY"
        config.update({"PERFORMANCE_HINT": "THROUGHPUT"} if requests == 0 else {"NUM_STREAMS": requests})
        if perf_count:
            config["PERF_COUNT"] = True
        self.compiled = core.compile_model(model, "CPU", config)
        self.in_flight = requests or int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        self.requests: queue.SimpleQueue = queue.SimpleQueue()
        for _ in range(self.in_flight):
            self.requests.put(self.compiled.create_infer_request())

    def run_one(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        request = self.requests.get()     # one infer request per run in flight
        try:
            outputs = request.infer({0: np.ascontiguousarray(image.numpy())})
            boxes, scores, labels = (outputs[self.compiled.output(name)] for name in ("boxes", "scores", "labels"))
            return torch.from_numpy(boxes.copy()), torch.from_numpy(scores.copy()), torch.from_numpy(labels.copy())
        finally:
            self.last_request = request
            self.requests.put(request)

    def last_profile(self) -> tuple[list, float]:
        """(per-layer counters, the request's own latency in ms) of the last run (``perf_count=True``)."""
        return self.last_request.get_profiling_info(), self.last_request.latency


def exported_size(path: str | Path) -> int:
    """Bytes of an exported file with what it needs beside it (an OpenVINO .xml's weights .bin)."""
    path = Path(path)
    return sum(p.stat().st_size for p in [path, *companions_of(path)] if p.is_file())


def load_exported(path: str | Path, device: str = "cpu", precision: str = "fp32", requests: int = 1
                  ) -> ExportedDetector:
    """The runner for an exported file, chosen by its format (formats.py); ``precision`` applies to OpenVINO.
    requests: images run at once when ``detect`` gets several (ONNX, OpenVINO); 0: as many as keep this
    CPU busy (``auto_requests``; OpenVINO's own throughput mode). 1 keeps single-image latency lowest."""
    path = Path(path)
    fmt = format_of(path)
    if fmt is None:
        raise ExportError(f"{path}: exported files end in {', '.join(SUFFIXES)}")
    if fmt.name == "onnx":
        return OnnxDetector(path, device, requests=requests)
    if fmt.name == "torchscript":
        return TorchScriptDetector(path, device)
    return OpenVinoDetector(path, device, precision, requests)


def auto_requests() -> int:
    """Runs in flight for onnxruntime: two on small CPUs (each run's convs do not use both cores
    fully), then one per four cores, each run taking its share of the threads."""
    cores = cpu_count()
    return max(min(cores, 2), cores // 4)
