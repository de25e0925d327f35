"""The ``rcnn export`` command body: load, export each format, verify, report."""

from __future__ import annotations

import os
from pathlib import Path

from .exporters import write_onnx, write_torchscript
from .graph import INPUT_DTYPES
from .runtime import ExportError, load_exported
from .verify import BOX_TOLERANCE, MIN_AGREEMENT_MAP50, SCORE_TOLERANCE, check_images, verify_export

WRITERS = {".onnx": write_onnx, ".torchscript": write_torchscript}


def model_overrides(pairs: list[str] | None, fail) -> dict:
    """``min_size=640`` or ``model.min_size=640`` -> {"min_size": 640} (values parsed as YAML)."""
    import yaml

    overrides = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            fail(f"{pair!r}: overrides are key=value, e.g. box_score_thresh=0.3")
        overrides[key.removeprefix("model.")] = yaml.safe_load(value)
    return overrides


def output_paths(weights: Path, out: Path | None, suffixes: list[str]) -> list[Path]:
    """Next to the weights by default (best.ckpt -> best.onnx); ``--out`` names the file (its
    suffix is replaced per format when several are asked for)."""
    if out is None:
        return [weights.with_suffix(s) for s in suffixes]
    if len(suffixes) == 1 and out.suffix.lower() == suffixes[0]:
        return [out]
    return [out.with_suffix(s) for s in suffixes]


def export_command(weights: Path, suffixes: list[str], out: Path | None, images: list[str] | None,
                   input_dtype: str, overrides: list[str] | None, console, fail) -> int:
    from ..api import Detector
    from ..model.weights import WeightsError

    if input_dtype not in INPUT_DTYPES:
        fail(f"--input-dtype {input_dtype}: use one of {', '.join(INPUT_DTYPES)}")
    if not weights.is_file():
        fail(f"--weights {weights}: no such file")
    try:
        detector = Detector.load(weights, **model_overrides(overrides, fail))
    except WeightsError as err:
        fail(str(err))
    checked = check_images(images, detector.metadata.get("dataset"))
    sample = checked[0] if input_dtype == "uint8" else checked[0].float() / 255
    failed = []
    for path in output_paths(weights, out, suffixes):
        path.parent.mkdir(parents=True, exist_ok=True)
        pending = path.with_name(f"{path.stem}.unverified{path.suffix}")
        with console.status(f"exporting {path.name} and checking it on {len(checked)} images"):
            WRITERS[path.suffix](detector, pending, sample, input_dtype)
            try:
                result = verify_export(detector.model, load_exported(pending), checked)
            except ExportError as err:
                pending.unlink(missing_ok=True)
                fail(str(err), 1)
        if result.passed:
            os.replace(pending, path)
        else:
            pending.unlink(missing_ok=True)
            failed.append(path.name)
        console.print(_summary(path, result), highlight=False, soft_wrap=True)
    sizes = ", ".join(f"{w}x{h}" for h, w in result.sizes)
    console.print(f"checked on {len(result.sizes)} images ({sizes}); tolerances: boxes {BOX_TOLERANCE} px, "
                  f"scores {SCORE_TOLERANCE}, mAP50 >= {MIN_AGREEMENT_MAP50}; input: (3, H, W) {input_dtype}",
                  highlight=False, soft_wrap=True)
    if failed:
        console.print(f"[bold red]error:[/] {', '.join(failed)} disagreed with the torch model and "
                      "were not written", highlight=False)
        return 1
    return 0


def _summary(path: Path, result) -> str:
    agreement = result.agreement
    runtime = "onnxruntime" if path.suffix == ".onnx" else "torchscript"
    verdict = "[green]parity ok[/]" if result.passed else "[red]parity FAILED[/]"
    size = f"{path.stat().st_size / 1e6:.1f} MB, " if result.passed else ""
    map50 = "n/a" if agreement.map50 is None else f"{agreement.map50:.4f}"
    return (f"{path} ({size}{verdict}): {agreement.compared - agreement.unmatched}/{agreement.compared} "
            f"detections matched, max box diff {agreement.max_box_diff:.1e} px, max score diff "
            f"{agreement.max_score_diff:.1e}, mAP50 vs torch {map50}; torch {result.torch_ms:.0f} ms/img, "
            f"{runtime} {result.exported_ms:.0f} ms/img")
