"""Int8 ONNX: onnxruntime static quantization of the verified fp32 graph, calibrated on the user's
own images, kept only where its detections agree with fp32 torch's (see commands/export.py).

What is quantized, and why (measured, README "Int8 ONNX"): the convolutions
of the backbone and FPN only, QDQ format, per-channel weights, activation ranges by min/max over
the calibration images. Weights are uint8 (U8U8) rather than int8: on AVX2 without VNNI,
onnxruntime's U8S8 kernels use VPMADDUBSW, whose 16-bit sums saturate and moved detections. The
RPN head's convolutions (objectness and box deltas, which pick the proposals) stay fp32, as do the
box head, RoIAlign and NMS, as in the eager int8 path (runtime/quantize.py).
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path

from torch import Tensor

from ..runtime.quantize import CALIBRATION_IMAGES

# Int8 rounds, so it is held to detecting what fp32 detects, as reduced precisions are.
MIN_INT8_AGREEMENT_MAP50 = 0.98
QUANTIZED_OPS = ["Conv"]
QUANTIZED_PREFIX = "/backbone/"      # ONNX node names follow the module path; the RPN head is "/head/"


def int8_path(path: Path) -> Path:
    """best.onnx -> best.int8.onnx"""
    return path.with_name(f"{path.stem}.int8{path.suffix}")


def calibration_images(sources: list[str] | None, dataset_cfg: dict | None,
                       count: int = CALIBRATION_IMAGES) -> tuple[list[Tensor], str]:
    """Up to ``count`` (3, H, W) uint8 images to calibrate on and where they came from: ``sources``
    (--images), else the checkpoint's training images (validation ones when it has none), as
    ``model.precision=int8`` calibrates in rcnn eval; [] when neither is on this machine."""
    from ..data.images import read_decodable_chw

    if sources:
        from ..data.sources import expand_sources

        return read_decodable_chw(expand_sources(sources)[0][:count]), "--images"
    if not dataset_cfg:
        return [], ""
    from omegaconf import OmegaConf

    from ..data.load import load_dataset

    try:
        splits = load_dataset(OmegaConf.create(dataset_cfg), ("train", "val")).splits
    except Exception:   # data not on this machine, moved, or unreadable
        return [], ""
    split = "train" if splits.get("train") else "val"
    return read_decodable_chw([r.path for r in (splits.get(split) or [])[:count]]), f"{split} images"


@contextmanager
def _quiet():
    """onnxruntime.quantization logs advice (run its pre-processing) on the root logger."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def quantize_onnx(source: Path, path: Path, images: list[Tensor]) -> Path:
    """Write the int8 QDQ model of the fp32 ONNX file ``source`` to ``path`` (callers write through
    ``files.atomic_path``); images: (3, H, W) uint8, the graph's input, one per calibration run."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    feeds = iter([{"image": image.contiguous().numpy()} for image in images])

    class Reader(CalibrationDataReader):
        def get_next(self):
            return next(feeds, None)

    graph = onnx.load(str(source), load_external_data=False).graph
    excluded = [node.name for node in graph.node
                if node.op_type in QUANTIZED_OPS and not node.name.startswith(QUANTIZED_PREFIX)]
    with _quiet():
        quantize_static(str(source), str(path), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QUInt8,
                        op_types_to_quantize=QUANTIZED_OPS, nodes_to_exclude=excluded)
    return path
