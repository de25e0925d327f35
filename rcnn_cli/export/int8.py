"""Int8 files: the verified fp32 ONNX graph quantized by onnxruntime, the verified OpenVINO IR by NNCF,
both calibrated on the user's own images and kept only where their detections agree with fp32 torch's
(see export/pipeline.py).

ONNX, what is quantized, and why (measured, docs/speed.md "Int8 ONNX choices"): the convolutions
of the backbone and FPN only, QDQ format, per-channel weights, activation ranges by min/max over
the calibration images. Weights are uint8 (U8U8) rather than int8: on AVX2 without VNNI,
onnxruntime's U8S8 kernels use VPMADDUBSW, whose 16-bit sums saturate and moved detections. The
RPN head's convolutions (objectness and box deltas, which pick the proposals) stay fp32, as do the
box head, RoIAlign and NMS, as in the eager int8 path (inference/quantize.py).

OpenVINO (measured, docs/speed.md "Int8 OpenVINO choices"): NNCF's post-training quantization of the backbone, FPN
and RPN 3x3 convolutions, as the eager int8 path; everything else (RPN objectness and deltas, box
decoding, TopK, NMS, RoIAlign, the box head) is in NNCF's ignored scope and stays float. Activation
ranges are min/max over the calibration images (NNCF's default averages per-image extremes, which
clipped the tiny model's rare large activations: agreement 0.80 against 0.89), and every weight
keeps 7 bits (overflow fix on all layers, not only the first: on AVX2 without VNNI the u8*s8 sums
saturate, as in onnxruntime; 0.74 without it).
"""

from __future__ import annotations

import logging
from contextlib import contextmanager, redirect_stdout
from pathlib import Path

from torch import Tensor

from ..inference.precision import MIN_AGREEMENT_MAP50
from .exporters import save_ir

# Int8 rounds, so it is held to detecting what fp32 detects, as every reduced precision is.
MIN_INT8_AGREEMENT_MAP50 = MIN_AGREEMENT_MAP50
QUANTIZED_OPS = ["Conv"]
QUANTIZED_PREFIX = "/backbone/"      # ONNX node names follow the module path; the RPN head is "/head/"
# OpenVINO op names are the ONNX node names: every op but the backbone's, the FPN's and the RPN's 3x3
# conv is left to float (NNCF's ignored scope takes regular expressions).
OPENVINO_FLOAT_OPS = r"^(?!/backbone/|/head/conv/).*"


def int8_path(path: Path) -> Path:
    """best.onnx -> best.int8.onnx, best.xml -> best.int8.xml (its weights: best.int8.bin)"""
    return path.with_name(f"{path.stem}.int8{path.suffix}")


@contextmanager
def _quiet():
    """onnxruntime.quantization logs advice (run its pre-processing) on the root logger; NNCF logs
    each op it skips and draws progress bars on stdout, which is for results."""
    import io

    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with redirect_stdout(io.StringIO()):
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


def quantize_openvino(source: Path, path: Path, images: list[Tensor]) -> Path:
    """Write the int8 IR of the fp32 OpenVINO IR ``source`` to ``path`` (.xml; the .bin beside it;
    callers write through ``files.atomic_paths``); images: (3, H, W) uint8, the graph's input."""
    import nncf
    import openvino as ov
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    model = ov.Core().read_model(str(source))
    dataset = nncf.Dataset(images, lambda image: {"image": image.contiguous().numpy()})
    advanced = AdvancedQuantizationParameters(overflow_fix=OverflowFix.ENABLE,
                                              activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX)
    with _quiet():
        quantized = nncf.quantize(model, dataset, subset_size=len(images), advanced_parameters=advanced,
                                  ignored_scope=nncf.IgnoredScope(patterns=[OPENVINO_FLOAT_OPS], validate=False))
    save_ir(quantized, path)
    return path
