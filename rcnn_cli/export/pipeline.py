"""The export pipeline: write each file, run it beside the torch model on real images, and keep it only
when it detects what the torch model detects (else nothing is left under its name). ``rcnn export``
runs the whole path; ``rcnn benchmark --formats`` writes its files through the same writers
(``write_file``, ``quantize_file``, ``trace_half``) and times each, kept or not.

The formats themselves (suffix, companions, runtime, int8 tool) are known once, in formats.py; here
only what writes and quantizes each. What is said to the user goes through a ``Voice``: the command
passes its console's, so this module never prints on its own.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..data.samples import calibration_images
from ..errors import JobFailed
from ..files import atomic_paths
from ..formats import BY_NAME, BY_SUFFIX, companions_of
from .exporters import write_onnx, write_openvino, write_torchscript
from .int8 import MIN_INT8_AGREEMENT_MAP50, int8_path, quantize_onnx, quantize_openvino
from .verify import (
    BOX_TOLERANCE,
    MIN_AGREEMENT_MAP50,
    MIN_REDUCED_AGREEMENT_MAP50,
    SCORE_TOLERANCE,
    verify_export,
)

WRITERS = {"onnx": write_onnx, "torchscript": write_torchscript, "openvino": write_openvino}
QUANTIZERS = {"onnx": quantize_onnx, "openvino": quantize_openvino}
QUANTIZABLE_SUFFIXES = tuple(BY_NAME[name].suffix for name in QUANTIZERS)


@dataclass(frozen=True)
class Voice:
    """How the pipeline talks to the user: ``say(line)`` one plain line; ``status(text)`` shown while a
    step runs. Library callers (benchmark, tests) stay quiet by default."""

    say: Callable[[str], None] = lambda line: None
    status: Callable[[str], AbstractContextManager] = lambda text: nullcontext()


QUIET = Voice()


@dataclass
class Exported:
    """What the pipeline did: files, the --json report's entries (one per file written or refused);
    failed, the names refused; sizes, (height, width) of the check images."""

    files: list[dict] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    sizes: list[tuple[int, int]] = field(default_factory=list)


class _Rejected(Exception):
    """Raised inside ``atomic_paths`` so that a file that failed its check is never kept."""


def write_file(detector, path: Path, sample: torch.Tensor, input_dtype: str = "uint8", **options) -> Path:
    """The exact graph of ``detector`` as the format ``path``'s suffix names (callers write through
    ``files.atomic_paths``); options: the writer's own (``onnx_path`` for OpenVINO: convert that file)."""
    return WRITERS[BY_SUFFIX[path.suffix].name](detector, path, sample, input_dtype, **options)


def quantize_file(source: Path, path: Path, images: list[torch.Tensor]) -> Path:
    """The int8 twin of the exported file ``source``, calibrated on ``images``, by its format's tool."""
    return QUANTIZERS[BY_SUFFIX[source.suffix].name](source, path, images)


def half_path(script: Path) -> Path:
    return script.with_name(f"{script.stem}.fp16{script.suffix}")


def trace_half(detector, path: Path, sample: torch.Tensor, input_dtype: str = "uint8") -> Path:
    """TorchScript traced on the GPU with an fp16 backbone and FPN (fp32 heads): a GPU-only file."""
    return write_file(detector, path, sample, input_dtype, half=True)


def export_files(detector, paths: list[Path], checked: list[torch.Tensor], input_dtype: str = "uint8",
                 int8: bool = False, half: bool = False, calibration: list[str] | None = None,
                 voice: Voice = QUIET) -> Exported:
    """Each of ``paths`` written from ``detector`` (loaded exact, fp32, on the CPU) and checked on the
    ``checked`` images; then, where asked, the int8 twins of the kept ONNX/OpenVINO files (calibrated
    on ``calibration``, else the training images) and the fp16 twin of the kept TorchScript file."""
    sample = checked[0] if input_dtype == "uint8" else checked[0].float() / 255
    done = Exported()
    for path in paths:
        result, kept = _write_checked(detector, path, sample, checked, input_dtype, voice)
        if not kept:
            done.failed.append(path.name)
        done.files.append(file_entry(path, "fp32", result, kept))
        voice.say(summary(path, result))
        if path.suffix == ".xml" and kept:
            voice.say(openvino_auto_line(path, checked))
    done.sizes = result.sizes
    sizes = ", ".join(f"{w}x{h}" for h, w in result.sizes)
    voice.say(f"checked on {len(result.sizes)} images ({sizes}); tolerances: boxes {BOX_TOLERANCE} px, "
              f"scores {SCORE_TOLERANCE}, mAP50 >= {MIN_AGREEMENT_MAP50}; input: (3, H, W) "
              f"{input_dtype}")
    by_suffix = {path.suffix: path for path in paths}
    for suffix in QUANTIZABLE_SUFFIXES if int8 else ():
        source = by_suffix.get(suffix)
        if source and source.name not in done.failed and not write_int8(detector, source, checked, calibration,
                                                                        done.files, voice):
            done.failed.append(int8_path(source).name)
    if half and by_suffix[".torchscript"].name not in done.failed:
        if not write_half(detector, by_suffix[".torchscript"], checked, input_dtype, done.files, voice):
            done.failed.append(half_path(by_suffix[".torchscript"]).name)
    return done


def _write_checked(detector, path: Path, sample, checked, input_dtype: str, voice: Voice):
    """One exact file, kept under ``path`` only when it passes its check -> (the check, kept)."""
    from ..inference.exported import ExportError, load_exported

    result = None
    try:
        with atomic_paths(path, *companions_of(path)) as pending:
            with voice.status(f"exporting {path.name} and checking it on {len(checked)} images"):
                write_file(detector, pending[0], sample, input_dtype)
                try:   # OpenVINO: the exact f32 graph, to the same tolerances as the others
                    result = verify_export(detector.model, load_exported(pending[0], precision="fp32"),
                                                  checked)
                except ExportError as err:
                    raise JobFailed(str(err)) from None
            if result.agreement.compared == 0:
                raise JobFailed(f"the torch model detects nothing on the {len(checked)} check images, so "
                                "the export cannot be checked; pass --images with pictures it finds objects in")
            if not result.passed:
                raise _Rejected
    except _Rejected:
        return result, False
    return result, True


def file_entry(path: Path, kind: str, result, kept: bool, min_map50: float | None = None) -> dict:
    """One file of the --json report: kept or refused, and its check's figures."""
    from ..inference.exported import exported_size

    return {"path": str(path), "kind": kind, "runtime": BY_SUFFIX[path.suffix].runtime, "kept": kept,
            "size_bytes": exported_size(path) if kept else None, "verification": result.figures(min_map50)}


def write_half(detector, script: Path, checked, input_dtype: str, files: list | None = None,
               voice: Voice = QUIET) -> bool:
    """best.torchscript -> best.fp16.torchscript (GPU, fp16 backbone and FPN, fp32 heads), kept only
    when its detections agree with fp32 torch's on the GPU at mAP50 >= MIN_REDUCED_AGREEMENT_MAP50."""
    path = half_path(script)
    sample = checked[0] if input_dtype == "uint8" else checked[0].float() / 255
    reference = copy.deepcopy(detector.model).float().cuda().eval()
    return keep_if_agrees(
        [path], lambda pending: trace_half(detector, pending, sample, input_dtype), reference,
        checked, f"tracing {path.name} on the GPU and checking it on {len(checked)} images",
        ("fp16 backbone, CUDA", MIN_REDUCED_AGREEMENT_MAP50, "torch fp32 on the GPU", "torchscript fp16"),
        files, "fp16", voice)


def write_int8(detector, source: Path, checked, sources: list[str] | None, files: list | None = None,
               voice: Voice = QUIET) -> bool:
    """best.onnx -> best.int8.onnx (best.xml -> best.int8.xml), kept only when its detections agree with
    fp32 torch's at mAP50 >= MIN_INT8_AGREEMENT_MAP50 on the check images, run as ``auto`` runs it.
    Calibrated on --images (``sources``), else the training images."""
    found = calibration_images(sources, detector.dataset)
    images, origin = found.images, found.origin
    if not images:
        images, origin = checked, "the check images (no --images, and the training data is not on this machine)"
    path = int8_path(source)
    tool = BY_SUFFIX[source.suffix].int8_tool
    return keep_if_agrees(
        [path, *companions_of(path)], lambda pending: quantize_file(source, pending, images), detector.model,
        checked, f"quantizing {source.name} to int8 with {tool} on {len(images)} images ({origin})",
        (f"int8 by {tool}, calibrated on {len(images)} {origin}", MIN_INT8_AGREEMENT_MAP50, "fp32 torch",
         f"{BY_SUFFIX[source.suffix].runtime} int8"), files, "int8", voice)


def keep_if_agrees(paths: list[Path], write, reference, checked, status: str, report: tuple,
                   files: list | None = None, kind: str = "", voice: Voice = QUIET) -> bool:
    """Writes a reduced-precision file (``paths[0]``, its companions after it) through ``write(pending)``,
    runs it beside ``reference`` on the check images and keeps it only when the agreement passes;
    report: (what, threshold, reference name, runtime name) for the printed line; files: the --json
    report's list, which gets the file as ``kind`` (int8, fp16)."""
    from ..inference.exported import ExportError, load_exported

    try:
        with atomic_paths(*paths) as pending:
            with voice.status(status):
                write(pending[0])
                try:
                    result = verify_export(reference, load_exported(pending[0]), checked)
                except ExportError as err:
                    raise JobFailed(str(err)) from None
            kept = _say_reduced(paths[0], pending[0], result, *report, voice=voice)
            if not kept:
                raise _Rejected
    except _Rejected:
        pass
    if files is not None:
        files.append(file_entry(paths[0], kind, result, kept, report[1]))
    return kept


def _say_reduced(path: Path, pending: Path, result, what: str, threshold: float, reference: str,
                 runtime: str, voice: Voice) -> bool:
    """One line for a reduced-precision file: its agreement with fp32 and the verdict -> passed."""
    from ..inference.exported import exported_size

    agreement = result.agreement
    passed = agreement.agrees(threshold)
    size = f"{exported_size(pending) / 1e6:.1f} MB, " if passed else ""
    map50 = "n/a" if agreement.map50 is None else f"{agreement.map50:.4f}"
    verdict = "ok" if passed else "FAILED, not written"
    voice.say(f"{path} ({size}{what}): agreement mAP50 with {reference} {map50} (needs >= {threshold}) {verdict}; "
              f"{agreement.matched}/{agreement.compared} detections matched, max score diff "
              f"{agreement.max_score_diff:.1e}; torch {result.torch_ms:.0f} ms/img, "
              f"{runtime} {result.exported_ms:.0f} ms/img")
    return passed


def summary(path: Path, result) -> str:
    """One line for an exact file: its parity with torch and the verdict."""
    from ..inference.exported import exported_size

    agreement = result.agreement
    runtime = BY_SUFFIX[path.suffix].runtime
    verdict = "parity ok" if result.passed else "parity FAILED"
    size = f"{exported_size(path) / 1e6:.1f} MB, " if result.passed and path.exists() else ""
    map50 = "n/a" if agreement.map50 is None else f"{agreement.map50:.4f}"
    tied = (f" ({agreement.tied} more tied in score with others: which of those survive NMS is decided by "
            "rounding, so they may differ)") if agreement.tied else ""
    return (f"{path} ({size}{verdict}): {agreement.matched}/{agreement.compared} detections matched{tied}, "
            f"max box diff {agreement.max_box_diff:.1e} px, max score diff "
            f"{agreement.max_score_diff:.1e}, mAP50 vs torch {map50}; torch {result.torch_ms:.0f} ms/img, "
            f"{runtime} {result.exported_ms:.0f} ms/img")


def openvino_auto_line(path: Path, images) -> str:
    """What model.precision=auto will run this IR at on this machine, decided by the one rule
    (inference/precision.py) on the check images and cached for rcnn predict and serve."""
    from ..data.samples import Samples
    from ..inference.exported import OpenVinoDetector
    from ..inference.precision import cache_key, decide, measure

    exact = OpenVinoDetector(path, "cpu", "fp32")
    samples = Samples(list(images), "check images")

    def trial():
        reduced = OpenVinoDetector(path, "cpu", "bf16")
        return measure(exact.detect, reduced.detect, images, len(exact.class_names), exact.score_threshold,
                       samples.origin)

    decision = decide("auto", "cpu", lambda: samples, trial, cache_key(path, {}, "cpu", "openvino"), exact="fp32")
    return f"{path.name} on this CPU, {decision.line()}"
