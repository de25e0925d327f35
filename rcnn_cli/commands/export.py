"""``rcnn export``: resolve the settings, check the destination, and hand the loaded model to the
export pipeline (export/pipeline.py: write, verify, keep only what passed); then the --json report."""

from __future__ import annotations

from pathlib import Path

from ..errors import JobFailed, UsageError
from ..export.graph import INPUT_DTYPES
from ..export.pipeline import QUANTIZABLE_SUFFIXES, Voice, export_files
from ..export.verify import BOX_TOLERANCE, SCORE_TOLERANCE, check_images
from ..files import write_json
from ..formats import BY_NAME
from ..settings.resolve import resolve
from . import console, plain, say, weights_or_default, writable
from .options import ExportOptions


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
    from ..inference.predictor import load_predictor

    if options.input_dtype not in INPUT_DTYPES:
        raise UsageError(f"--input-dtype {options.input_dtype}: use one of {', '.join(INPUT_DTYPES)}")
    if options.int8 and not set(QUANTIZABLE_SUFFIXES) & set(options.suffixes):
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
    done = export_files(detector, paths, checked, options.input_dtype, options.int8, options.half, options.images,
                        Voice(say, lambda line: console.status(plain(line))))
    if options.json_path:
        write_json(options.json_path, {
            "weights": str(weights), "input_dtype": options.input_dtype,
            "check_images": [{"width": w, "height": h} for h, w in done.sizes],
            "tolerances": {"box_px": BOX_TOLERANCE, "score": SCORE_TOLERANCE}, "files": done.files})
    if done.failed:
        raise JobFailed(f"{', '.join(done.failed)} disagreed with the torch model and were not written")
    return 0


def _check_half(options: ExportOptions) -> None:
    import torch

    if not options.half:
        return
    if ".torchscript" not in options.suffixes:
        raise UsageError("--half writes NAME.fp16.torchscript beside the fp32 file; add --format torchscript")
    if not torch.cuda.is_available():
        raise UsageError("--half traces and checks the fp16 file on a GPU, and no CUDA device is visible here; "
                         "run it where the file will run")
