"""Writing the single-image graph as ONNX (TorchScript-based exporter), TorchScript, or OpenVINO IR
(converted from that ONNX file).

Why the TorchScript-based ONNX exporter (``torch.onnx.export(dynamo=False)``): on torch 2.15 the
``dynamo=True`` exporter stops in ``torch.export`` on the data-dependent proposal selection (see
docs/export-and-deployment.md), while the traced graph runs in onnxruntime with detections equal to eager
torch's. Opset 17: RoiAlign with half-pixel modes (16+) and a release every runtime reads.
"""

from __future__ import annotations

import errno
import io
import json
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from ..errors import DiskRefused
from ..formats import INPUT_DTYPES
from ..inference.exported import OPENVINO_META, TORCHSCRIPT_META
from .graph import SingleImageDetector

OPSET = 17
INPUT_NAMES = ["image"]
OUTPUT_NAMES = ["boxes", "scores", "labels"]
# Any image height and width; any number of detections.
DYNAMIC_AXES = {"image": {1: "height", 2: "width"}, "boxes": {0: "detections"},
                "scores": {0: "detections"}, "labels": {0: "detections"}}


def export_metadata(detector, input_dtype: str) -> dict[str, str]:
    """String key/values stored in the exported file, enough to label its outputs alone."""
    from ..version import __version__

    cfg = detector.config
    return {
        "producer": f"rcnn-cli {__version__}",
        "class_names": json.dumps(list(detector.class_names)),
        "category_ids": json.dumps(detector.metadata.get("category_ids")),
        "input_dtype": input_dtype,
        "score_threshold": str(cfg["box_score_thresh"]),
        "model": json.dumps({k: cfg[k] for k in ("backbone", "min_size", "max_size") if k in cfg}),
    }


def traceable(detector, input_dtype: str, device: str = "cpu", half: bool = False) -> SingleImageDetector:
    """A single-image graph over an fp32 copy of the detector's model on ``device``, in eval mode;
    ``half``: its backbone and FPN in fp16 (the bulk of the work; heads and box arithmetic stay fp32)."""
    import copy

    if getattr(detector.model, "precision", "fp32") not in ("fp32", "folded"):
        from ..errors import UsageError

        raise UsageError(f"this detector runs {detector.model.precision}; an export traces the exact model: "
                         "load it with precision='fp32' (rcnn export does)")
    model = copy.deepcopy(detector.model).float().to(device).eval()
    if half:
        model.backbone.half()
    return SingleImageDetector(model, input_dtype).eval()


@contextmanager
def _quiet_trace():
    """Tracer warnings about Python numbers are expected: the RoI pooling scales (powers of two)
    and the configured top-N limits are constants of the model, not of the input."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        # indices into per-class boxes come from NMS and are never negative
        warnings.filterwarnings("ignore", message=".*aten::index operator of advanced indexing.*")
        yield


def write_onnx(detector, path: Path, sample: torch.Tensor, input_dtype: str = INPUT_DTYPES[0],
               opset: int = OPSET) -> Path:
    """Export to ``path`` (callers write through ``files.atomic_path``). sample: (3, H, W) image of
    input_dtype."""
    import onnx

    graph = traceable(detector, input_dtype)
    with _quiet_trace(), torch.no_grad():
        torch.onnx.export(graph, (sample,), str(path), dynamo=False, opset_version=opset,
                          input_names=INPUT_NAMES, output_names=OUTPUT_NAMES, dynamic_axes=DYNAMIC_AXES)
    proto = onnx.load(str(path))
    scope_unnamed_nodes(proto.graph)
    for key, value in export_metadata(detector, input_dtype).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))
    return path


def scope_unnamed_nodes(graph, scope: str | None = None) -> None:
    """Nodes the exporter names without a scope ("If_1947", its subgraph's "NonMaxSuppression_1974": the
    ops of scripted functions such as torchvision's batched_nms) get the scope of the node whose output
    they read (inside a subgraph: the scope of the node holding it), so that every node that computes
    something says its stage (export/graph.py's scopes; benchmark/exported_profile.py reads them).
    Names only: the graph computes the same."""
    scope_of = {}
    for node in graph.node:
        if not node.name.startswith("/"):
            owner = scope or next((scope_of[name] for name in node.input if scope_of.get(name)), None)
            if owner:
                node.name = f"{owner}/{node.name}"
        own = node.name.rsplit("/", 1)[0] if node.name.startswith("/") else None
        for output in node.output:
            scope_of[output] = own
        for attribute in node.attribute:
            if attribute.HasField("g"):
                scope_unnamed_nodes(attribute.g, own)


def write_torchscript(detector, path: Path, sample: torch.Tensor, input_dtype: str = INPUT_DTYPES[0],
                      half: bool = False) -> Path:
    """Traced TorchScript module; metadata in the archive's extra file ``rcnn_meta.json``.
    ``half``: traced on the GPU with an fp16 backbone (a GPU-only file: the trace records the device)."""
    device = "cuda" if half else "cpu"
    graph = traceable(detector, input_dtype, device, half)
    meta = export_metadata(detector, input_dtype)
    if half:
        meta.update(device="cuda", backbone_dtype="float16")
    with _quiet_trace(), torch.no_grad():
        traced = torch.jit.trace(graph, (sample.to(device),), check_trace=False)
        extra: dict[str, Any] = {TORCHSCRIPT_META: json.dumps(meta)}
        # into memory, then to the file from Python: torch.jit.save's own file writer aborts the whole
        # process (C++ terminate, a half file left) when the disk fills, where Python raises ENOSPC
        archive = io.BytesIO()
        torch.jit.save(traced, archive, _extra_files=extra)
    path.write_bytes(archive.getbuffer())
    return path


def write_openvino(detector, path: Path, sample: torch.Tensor, input_dtype: str = INPUT_DTYPES[0],
                   onnx_path: Path | None = None) -> Path:
    """OpenVINO IR: ``path`` (.xml) and the weights beside it (same name, .bin), converted from the
    ONNX graph (the one ``write_onnx`` writes and the parity check proves; ``onnx_path``: one already
    written), weights kept in fp32 (OpenVINO would halve them to fp16 by default); the metadata goes
    into the IR's rt_info."""
    import tempfile

    import openvino as ov

    with tempfile.TemporaryDirectory(dir=path.parent) as folder:
        onnx_path = onnx_path or write_onnx(detector, Path(folder) / "graph.onnx", sample, input_dtype)
        model = ov.convert_model(str(onnx_path))
    for key, value in export_metadata(detector, input_dtype).items():
        model.set_rt_info(value, [OPENVINO_META, key])
    save_ir(model, path)
    return path


# What an op takes in the IR's .xml, written on the safe side (455 bytes measured on resnet18_fpn's IR).
IR_XML_BYTES_PER_OP = 1024


def save_ir(model, path: Path) -> None:
    """``ov.save_model`` in fp32, a full disk said as such: OpenVINO's C++ writer reports it as
    RuntimeError("basic_ios::clear: iostream error"), no errno, and removes what it wrote; a failure in
    a folder with less room than the IR needs (its weights and the .xml) is taken for ENOSPC (``files``
    names the target)."""
    import shutil

    import openvino as ov

    try:
        ov.save_model(model, str(path), compress_to_fp16=False)
    except RuntimeError as err:
        ops = model.get_ops()
        weights = sum(op.get_byte_size() for op in ops if op.get_type_name() == "Constant")
        needs = weights + len(ops) * IR_XML_BYTES_PER_OP
        if shutil.disk_usage(path.parent).free < needs:
            raise DiskRefused(errno.ENOSPC, path, needs=needs) from err
        raise
