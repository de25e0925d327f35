"""``rcnn benchmark --formats onnx,openvino``: the benchmarked weights written as exported files by the
export pipeline's writers (export/pipeline.py: the files ``rcnn export`` writes, int8 twins included)
and run by their runtimes on the same images as the torch columns; per file: ms/img at batch 1, size
on disk, and agreement with fp32 torch (mAP50 of its detections scored against fp32 torch's, as the
other columns). Every file is timed, kept or not: the agreement column shows what export's check
would decide, so the pipeline's keep-or-refuse step is not run here."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch

from ..errors import UsageError
from ..eval.agreement import agreement_map50
from ..export.compiled import PATHS, runs_here
from ..export.int8 import int8_path
from ..export.pipeline import half_path, quantize_file, trace_half, write_file
from ..formats import BY_NAME
from ..inference.exported import exported_size, load_exported
from ..inference.predictor import eager_predictor
from ..timing import timed

NOT_NATIVE = "not native here"      # bf16 emulated: slower than f32, so not worth a row of timings


def row_key(path: str) -> str:
    """An OpenVINO path's name (export/compiled.py ``PATHS``: "openvino int8 bf16") -> its row in
    result["exported"] ("openvino_int8_bf16")."""
    return path.replace(" ", "_")


def parse_formats(text: str | None) -> list[str]:
    """--formats onnx,openvino -> ["onnx", "openvino"]; "" or "none" -> []."""
    names = [name.strip().lower() for name in (text or "").split(",") if name.strip()]
    names = [name for name in names if name != "none"]
    if unknown := [name for name in names if name not in BY_NAME]:
        raise UsageError(f"--formats {unknown[0]}: use one or more of {', '.join(BY_NAME)} (comma-separated) or none")
    return list(dict.fromkeys(names))


def exported_figures(model: torch.nn.Module, cfg: dict[str, Any], images: list[torch.Tensor],
                     calibration: list[torch.Tensor], exact: list[dict], formats: list[str], repeats: int,
                     warmup: int, measurer=None) -> dict[str, dict]:
    """{"onnx_fp32", "onnx_int8", "openvino_f32", "openvino_bf16", "openvino_int8", "openvino_int8_bf16",
    "torchscript_fp32", "torchscript_fp16"} for the formats asked: each ``{"runs_as", "size_bytes", "latency_batch1",
    "throughput", "agreement_map50"}`` or ``{"skipped": why}``.
    model: ours in exact fp32; exact: its outputs on ``images``, the reference. measurer: what measures
    each file instead of ``_measurer`` (the stage profile's, exported_profile.stage_measurer)."""
    classes = model.roi_heads.box_predictor.cls_score.out_features - 1
    detector = eager_predictor(model, cfg, [f"class{i}" for i in range(1, classes + 1)])
    measure = (measurer or _measurer)(images, exact, classes, repeats, warmup)
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="rcnn-bench-") as folder:
        folder = Path(folder)
        # OpenVINO converts the ONNX graph: written once for both
        onnx_path = write_file(detector, folder / "model.onnx", images[0]) if {"onnx", "openvino"} & set(formats) \
            else None
        if "onnx" in formats:
            rows["onnx_fp32"] = measure(onnx_path)
            rows["onnx_int8"] = measure(quantize_file(onnx_path, int8_path(onnx_path), calibration))
        if "openvino" in formats:
            rows.update(_openvino_rows(detector, folder, onnx_path, images[0], calibration, measure))
        if "torchscript" in formats:
            rows.update(_torchscript_rows(detector, folder, images[0], measure))
    return rows


def _torchscript_rows(detector, folder: Path, sample: torch.Tensor, measure) -> dict:
    script = write_file(detector, folder / "model.torchscript", sample)
    rows = {"torchscript_fp32": measure(script)}
    if not torch.cuda.is_available():
        rows["torchscript_fp16"] = {"skipped": "needs a GPU (export --half)"}
        return rows
    rows["torchscript_fp16"] = measure(trace_half(detector, half_path(script), sample))
    return rows


def _openvino_rows(detector, folder: Path, onnx_path: Path, sample: torch.Tensor, calibration, measure) -> dict:
    """One row per OpenVINO path auto may compare (export/compiled.py ``PATHS``: the IR and the hint each
    runs at), "openvino int8 bf16" -> "openvino_int8_bf16"; a bf16 hint is skipped where not native."""
    irs = {"f32": write_file(detector, folder / "model.xml", sample, onnx_path=onnx_path)}
    irs["int8"] = quantize_file(irs["f32"], int8_path(irs["f32"]), calibration)
    return {row_key(name): measure(irs[ir], hint) if runs_here(name) else {"skipped": NOT_NATIVE}
            for name, (ir, hint) in PATHS.items()}


def _measurer(images: list[torch.Tensor], exact: list[dict], classes: int, repeats: int, warmup: int):
    """-> measure(path, precision): one row, the file run one image at a time as rcnn predict runs it."""
    from ..timing import spread

    def measure(path: Path, precision: str = "fp32") -> dict[str, Any]:
        runner = load_exported(path, precision=precision)
        latency = timed(lambda: [runner.detect([image]) for image in images], repeats, warmup)
        outputs = [runner.detect([image])[0] for image in images]
        runs_as = "onnxruntime" if path.suffix == ".onnx" else runner.runs_as
        return {"runs_as": runs_as, "size_bytes": exported_size(path),
                "latency_batch1": spread([t / len(images) for t in latency]),
                "throughput": _throughput(path, precision, images, repeats, warmup),
                "agreement_map50": agreement_map50(exact, outputs, classes)}

    return measure


def _throughput(path: Path, precision: str, images: list[torch.Tensor], repeats: int, warmup: int) -> dict:
    """Images/s with all images handed over at once, as rcnn predict hands a batch: the runner keeps
    as many in flight as it chooses for this CPU (``requests=0``)."""
    runner = load_exported(path, precision=precision, requests=0)
    best = min(timed(lambda: runner.detect(images), repeats, warmup))
    return {"images_per_s": len(images) / best, "in_flight": runner.in_flight}
