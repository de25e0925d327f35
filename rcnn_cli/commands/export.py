"""``rcnn export``: load through the settings rule, export each format, verify, keep only what passed."""

from __future__ import annotations

from pathlib import Path

from ..data.samples import calibration_images
from ..errors import JobFailed, UsageError
from ..export.exporters import write_onnx, write_openvino, write_torchscript
from ..export.graph import INPUT_DTYPES
from ..export.int8 import MIN_INT8_AGREEMENT_MAP50, int8_path, quantize_onnx, quantize_openvino
from ..export.verify import (
    BOX_TOLERANCE,
    MIN_AGREEMENT_MAP50,
    MIN_REDUCED_AGREEMENT_MAP50,
    SCORE_TOLERANCE,
    check_images,
    verify_export,
)
from ..files import atomic_paths, write_json
from ..formats import BY_NAME, BY_SUFFIX, companions_of
from ..settings.resolve import resolve
from . import console, say, weights_or_default, writable
from .options import ExportOptions

# The formats themselves (suffix, companions, runtime, int8 tool) are known once, in formats.py;
# here only what writes and quantizes each.
WRITERS = {"onnx": write_onnx, "torchscript": write_torchscript, "openvino": write_openvino}
QUANTIZERS = {"onnx": quantize_onnx, "openvino": quantize_openvino}


class _Rejected(Exception):
    """Raised inside ``atomic_path`` so that a file that failed its check is never kept."""


def suffixes_for(formats: list[str]) -> list[str]:
    """--format onnx,openvino (repeatable, comma-separated) -> file suffixes, in the order asked."""
    names = [name.strip().lower() for item in formats for name in item.split(",") if name.strip()]
    if unknown := [name for name in names if name not in BY_NAME]:
        raise UsageError(f"--format {unknown[0]}: use one of {', '.join(BY_NAME)}")
    return list(dict.fromkeys(BY_NAME[name].suffix for name in names))


def output_paths(weights: Path, out: Path | None, suffixes: list[str]) -> list[Path]:
    """Next to the weights by default (best.ckpt -> best.onnx); ``--out`` names the file (its
    suffix is replaced per format when several are asked for)."""
    if out is None:
        return [weights.with_suffix(s) for s in suffixes]
    if len(suffixes) == 1 and out.suffix.lower() == suffixes[0]:
        return [out]
    return [out.with_suffix(s) for s in suffixes]


def run(options: ExportOptions) -> int:
    from ..inference.exported import ExportError, load_exported
    from ..inference.predictor import load_predictor

    if options.input_dtype not in INPUT_DTYPES:
        raise UsageError(f"--input-dtype {options.input_dtype}: use one of {', '.join(INPUT_DTYPES)}")
    if options.int8 and not {BY_NAME[name].suffix for name in QUANTIZERS} & set(options.suffixes):
        raise UsageError("--int8 quantizes the ONNX or OpenVINO file; add --format onnx or --format openvino")
    _check_half(options)
    weights = weights_or_default(options.weights)
    paths = output_paths(Path(weights), options.out, options.suffixes)
    writable(f"--out {paths[0]}" if options.out else f"{paths[0]} (beside --weights; or name another --out)",
             paths[0].parent)
    # The graph is traced from the exact fp32 model on the CPU (settings.resolve refuses another device).
    settings = resolve("export", options.overrides, weights=weights, config_dir=options.config_dir)
    for note in settings.notes:
        say(f"note: {note}")
    if settings.weights.exported:
        raise UsageError(f"--weights {options.weights}: already exported; export from the checkpoint (.ckpt/.pth)")
    detector = load_predictor(settings.cfg, settings.checkpoint, prepare=False, source=settings.weights)
    checked = check_images(options.images, detector.dataset)
    sample = checked[0] if options.input_dtype == "uint8" else checked[0].float() / 255
    failed, result, files = [], None, []
    for path in paths:
        companions = companions_of(path)
        try:
            with atomic_paths(path, *companions) as pending:
                with console.status(f"exporting {path.name} and checking it on {len(checked)} images"):
                    WRITERS[BY_SUFFIX[path.suffix].name](detector, pending[0], sample, options.input_dtype)
                    try:   # OpenVINO: the exact f32 graph, to the same tolerances as the others
                        result = verify_export(detector.model, load_exported(pending[0], precision="fp32"), checked)
                    except ExportError as err:
                        raise JobFailed(str(err)) from None
                if result.agreement.compared == 0:
                    raise JobFailed(f"the torch model detects nothing on the {len(checked)} check images, so "
                                    "the export cannot be checked; pass --images with pictures it finds objects in")
                if not result.passed:
                    raise _Rejected
        except _Rejected:
            failed.append(path.name)
        files.append(_file_entry(path, "fp32", result, path.name not in failed))
        say(_summary(path, result))
        if path.suffix == ".xml" and path.name not in failed:
            say(_openvino_auto_line(path, checked))
    sizes = ", ".join(f"{w}x{h}" for h, w in result.sizes)
    say(f"checked on {len(result.sizes)} images ({sizes}); tolerances: boxes {BOX_TOLERANCE} px, "
        f"scores {SCORE_TOLERANCE}, mAP50 >= {MIN_AGREEMENT_MAP50}; input: (3, H, W) {options.input_dtype}")
    by_suffix = {path.suffix: path for path in paths}
    for suffix in [BY_NAME[name].suffix for name in QUANTIZERS] if options.int8 else ():
        source = by_suffix.get(suffix)
        if source and source.name not in failed and not _write_int8(detector, source, checked, options.images, files):
            failed.append(int8_path(source).name)
    if options.half and by_suffix[".torchscript"].name not in failed:
        if not _write_half(detector, by_suffix[".torchscript"], checked, options.input_dtype, files):
            failed.append(half_path(by_suffix[".torchscript"]).name)
    if options.json_path:
        write_json(options.json_path, {
            "weights": str(weights), "input_dtype": options.input_dtype,
            "check_images": [{"width": w, "height": h} for h, w in result.sizes],
            "tolerances": {"box_px": BOX_TOLERANCE, "score": SCORE_TOLERANCE}, "files": files})
    if failed:
        raise JobFailed(f"{', '.join(failed)} disagreed with the torch model and were not written")
    return 0


def half_path(script: Path) -> Path:
    return script.with_name(f"{script.stem}.fp16{script.suffix}")


def _check_half(options: ExportOptions) -> None:
    import torch

    if not options.half:
        return
    if ".torchscript" not in options.suffixes:
        raise UsageError("--half writes NAME.fp16.torchscript beside the fp32 file; add --format torchscript")
    if not torch.cuda.is_available():
        raise UsageError("--half traces and checks the fp16 file on a GPU, and no CUDA device is visible here; "
                         "run it where the file will run")


def _file_entry(path: Path, kind: str, result, kept: bool, min_map50: float | None = None) -> dict:
    """One file of the --json report: kept or refused, and its check's figures."""
    from ..inference.exported import exported_size

    return {"path": str(path), "kind": kind, "runtime": BY_SUFFIX[path.suffix].runtime, "kept": kept,
            "size_bytes": exported_size(path) if kept else None, "verification": result.figures(min_map50)}


def _write_half(detector, script: Path, checked, input_dtype: str, files: list | None = None) -> bool:
    """best.torchscript -> best.fp16.torchscript (GPU, fp16 backbone and FPN, fp32 heads), kept only
    when its detections agree with fp32 torch's on the GPU at mAP50 >= MIN_REDUCED_AGREEMENT_MAP50."""
    import copy

    path = half_path(script)
    sample = checked[0] if input_dtype == "uint8" else checked[0].float() / 255
    reference = copy.deepcopy(detector.model).float().cuda().eval()
    return _keep_if_agrees(
        [path], lambda pending: write_torchscript(detector, pending, sample, input_dtype, half=True), reference,
        checked, f"tracing {path.name} on the GPU and checking it on {len(checked)} images",
        ("fp16 backbone, CUDA", MIN_REDUCED_AGREEMENT_MAP50, "torch fp32 on the GPU", "torchscript fp16"),
        files, "fp16")


def _keep_if_agrees(paths: list[Path], write, reference, checked, status: str, report: tuple,
                    files: list | None = None, kind: str = "") -> bool:
    """Writes a reduced-precision file (``paths[0]``, its companions after it) through ``write(pending)``,
    runs it beside ``reference`` on the check images and keeps it only when the agreement passes;
    report: (what, threshold, reference name, runtime name) for the printed line; files: the --json
    report's list, which gets the file as ``kind`` (int8, fp16)."""
    from ..inference.exported import ExportError, load_exported

    try:
        with atomic_paths(*paths) as pending:
            with console.status(status):
                write(pending[0])
                try:
                    result = verify_export(reference, load_exported(pending[0]), checked)
                except ExportError as err:
                    raise JobFailed(str(err)) from None
            kept = _say_reduced(paths[0], pending[0], result, *report)
            if not kept:
                raise _Rejected
    except _Rejected:
        pass
    if files is not None:
        files.append(_file_entry(paths[0], kind, result, kept, report[1]))
    return kept


def _say_reduced(path: Path, pending: Path, result, what: str, threshold: float, reference: str,
                 runtime: str) -> bool:
    """One line for a reduced-precision file: its agreement with fp32 and the verdict -> passed."""
    from ..inference.exported import exported_size

    agreement = result.agreement
    passed = agreement.agrees(threshold)
    size = f"{exported_size(pending) / 1e6:.1f} MB, " if passed else ""
    map50 = "n/a" if agreement.map50 is None else f"{agreement.map50:.4f}"
    verdict = "ok" if passed else "FAILED, not written"
    say(f"{path} ({size}{what}): agreement mAP50 with {reference} {map50} (needs >= {threshold}) {verdict}; "
        f"{agreement.matched}/{agreement.compared} detections matched, max score diff "
        f"{agreement.max_score_diff:.1e}; torch {result.torch_ms:.0f} ms/img, "
        f"{runtime} {result.exported_ms:.0f} ms/img")
    return passed


def _write_int8(detector, source: Path, checked, sources: list[str] | None, files: list | None = None) -> bool:
    """best.onnx -> best.int8.onnx (best.xml -> best.int8.xml), kept only when its detections agree with
    fp32 torch's at mAP50 >= MIN_INT8_AGREEMENT_MAP50 on the check images, run as ``auto`` runs it.
    Calibrated on --images, else the training images."""
    found = calibration_images(sources, detector.dataset)
    images, origin = found.images, found.origin
    if not images:
        images, origin = checked, "the check images (no --images, and the training data is not on this machine)"
    path = int8_path(source)
    companions = companions_of(path)
    tool = BY_SUFFIX[source.suffix].int8_tool
    return _keep_if_agrees(
        [path, *companions], lambda pending: QUANTIZERS[BY_SUFFIX[source.suffix].name](source, pending, images),
        detector.model,
        checked, f"quantizing {source.name} to int8 with {tool} on {len(images)} images ({origin})",
        (f"int8 by {tool}, calibrated on {len(images)} {origin}", MIN_INT8_AGREEMENT_MAP50, "fp32 torch",
         f"{BY_SUFFIX[source.suffix].runtime} int8"), files, "int8")


def _summary(path: Path, result) -> str:
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


def _openvino_auto_line(path: Path, images) -> str:
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
