"""``rcnn export``: load through the settings rule, export each format, verify, keep only what passed."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import JobFailed, UsageError
from ..export.exporters import write_onnx, write_torchscript
from ..export.graph import INPUT_DTYPES
from ..export.verify import BOX_TOLERANCE, MIN_AGREEMENT_MAP50, SCORE_TOLERANCE, check_images, verify_export
from ..files import atomic_path
from ..settings import resolve
from . import console, say
from .predict import weights_or_default

WRITERS = {".onnx": write_onnx, ".torchscript": write_torchscript}


@dataclass
class ExportOptions:
    weights: Path | str | None = None     # None: the default COCO-pretrained weights, as rcnn predict
    suffixes: list[str] = field(default_factory=lambda: [".onnx"])
    overrides: list[str] = field(default_factory=list)
    config_dir: Path | None = None
    out: Path | None = None
    images: list[str] | None = None
    input_dtype: str = "uint8"


class _Rejected(Exception):
    """Raised inside ``atomic_path`` so that a file that failed its check is never kept."""


def output_paths(weights: Path, out: Path | None, suffixes: list[str]) -> list[Path]:
    """Next to the weights by default (best.ckpt -> best.onnx); ``--out`` names the file (its
    suffix is replaced per format when several are asked for)."""
    if out is None:
        return [weights.with_suffix(s) for s in suffixes]
    if len(suffixes) == 1 and out.suffix.lower() == suffixes[0]:
        return [out]
    return [out.with_suffix(s) for s in suffixes]


def run(options: ExportOptions) -> int:
    from ..runtime.exported import ExportError, load_exported
    from ..runtime.predictor import load_predictor

    if options.input_dtype not in INPUT_DTYPES:
        raise UsageError(f"--input-dtype {options.input_dtype}: use one of {', '.join(INPUT_DTYPES)}")
    weights = weights_or_default(options.weights)
    if Path(weights).suffix.lower() in WRITERS:
        raise UsageError(f"--weights {options.weights}: already exported; export from the checkpoint (.ckpt/.pth)")
    # The graph is traced from the exact fp32 model on the CPU, whatever device and precision say.
    settings = resolve("export", list(options.overrides) + ["device=cpu"], weights=weights,
                       config_dir=options.config_dir)
    for note in settings.notes:
        say(f"note: {note}")
    detector = load_predictor(settings.cfg, settings.checkpoint, prepare=False)
    checked = check_images(options.images, detector.metadata.get("dataset"))
    sample = checked[0] if options.input_dtype == "uint8" else checked[0].float() / 255
    failed, result = [], None
    for path in output_paths(Path(weights), options.out, options.suffixes):
        try:
            with atomic_path(path) as pending:
                with console.status(f"exporting {path.name} and checking it on {len(checked)} images"):
                    WRITERS[path.suffix](detector, pending, sample, options.input_dtype)
                    try:
                        result = verify_export(detector.model, load_exported(pending), checked)
                    except ExportError as err:
                        raise JobFailed(str(err)) from None
                if not result.passed:
                    raise _Rejected
        except _Rejected:
            failed.append(path.name)
        say(_summary(path, result))
    sizes = ", ".join(f"{w}x{h}" for h, w in result.sizes)
    say(f"checked on {len(result.sizes)} images ({sizes}); tolerances: boxes {BOX_TOLERANCE} px, "
        f"scores {SCORE_TOLERANCE}, mAP50 >= {MIN_AGREEMENT_MAP50}; input: (3, H, W) {options.input_dtype}")
    if failed:
        raise JobFailed(f"{', '.join(failed)} disagreed with the torch model and were not written")
    return 0


def _summary(path: Path, result) -> str:
    agreement = result.agreement
    runtime = "onnxruntime" if path.suffix == ".onnx" else "torchscript"
    verdict = "[green]parity ok[/]" if result.passed else "[red]parity FAILED[/]"
    size = f"{path.stat().st_size / 1e6:.1f} MB, " if result.passed else ""
    map50 = "n/a" if agreement.map50 is None else f"{agreement.map50:.4f}"
    tied = (f" ({agreement.tied} more tied in score with others: which of those survive NMS is decided by "
            "rounding, so they may differ)") if agreement.tied else ""
    return (f"{path} ({size}{verdict}): {agreement.matched}/{agreement.compared} detections matched{tied}, "
            f"max box diff {agreement.max_box_diff:.1e} px, max score diff "
            f"{agreement.max_score_diff:.1e}, mAP50 vs torch {map50}; torch {result.torch_ms:.0f} ms/img, "
            f"{runtime} {result.exported_ms:.0f} ms/img")
