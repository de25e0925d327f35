"""The ``rcnn predict`` command body: checks arguments, loads the detector, runs, reports."""

from __future__ import annotations

from pathlib import Path

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..model.quantize import CALIBRATION_IMAGES
from .runner import PredictOptions, lowest_threshold, read_conf, run
from .sources import expand_sources
from .writers import write_outputs

FORMATS = ("json", "csv", "coco", "voc")


def load_detector(weights: Path, device: str, score_floor: float, precision: str | None = None,
                  calibration_paths: list = ()):
    """(detect function, class names, category ids or None, what it runs as, e.g. "auto: bf16")
    for a checkpoint, a torchvision file, or an exported .onnx / .torchscript file. precision:
    auto | fp32 | bf16 | int8 (None: the checkpoint's ``model.precision``); int8 calibrates on
    ``calibration_paths``."""
    from ..export.runtime import EXPORTED_SUFFIXES, load_exported

    if weights.suffix.lower() in EXPORTED_SUFFIXES:
        if precision not in (None, "auto"):
            raise ValueError(f"--precision {precision}: an exported file runs as it was exported")
        exported = load_exported(weights, device)
        return exported.detect, exported.class_names, exported.category_ids, weights.suffix.lower()[1:]
    from ..api import Detector
    from ..model.fast import prepare_for_inference

    detector = Detector.load(weights, device=device, box_score_thresh=min(score_floor, 0.05))
    precision = precision or detector.config.get("precision", "auto")
    calibration = []
    if precision == "int8":
        if device != "cpu":
            raise ValueError("--precision int8 runs on the CPU; use --device cpu")
        from ..data.images import read_decodable_chw

        calibration = read_decodable_chw(calibration_paths)
    # auto: BatchNorm folded + channels_last (same detections), and bf16 where a probe measures it
    # faster (see README, "Speed"); fp32 keeps the exact model.
    prepare_for_inference(detector.model, precision, calibration)

    def detect(images):
        with torch.inference_mode():
            return detector.model([image.to(detector.device) for image in images])

    runs_as = detector.model.precision if precision == detector.model.precision else f"{precision}: {detector.model.precision}"
    return detect, detector.class_names, detector.metadata.get("category_ids"), runs_as


def free_folder(base: Path) -> Path:
    candidate, n = base, 2
    while candidate.exists():
        candidate, n = base.with_name(f"{base.name}-{n}"), n + 1
    return candidate


def predict_command(sources, weights, out, formats, conf, classes, batch_size, every, draw, device,
                    console, fail, precision: str | None = None) -> int:
    from ..export.runtime import ExportError
    from ..model.weights import WeightsError

    formats = [f.lower() for f in formats]
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        fail(f"--format {unknown[0]}: use one of {', '.join(FORMATS)}")
    if not weights.is_file():
        fail(f"--weights {weights}: no such file")
    try:
        threshold = read_conf(conf)
    except ValueError as err:
        fail(str(err))
    images, videos, problems = expand_sources(sources)
    if not images and not videos:
        fail("no images or videos found in " + ", ".join(sources) + (f" ({problems[0]})" if problems else ""))
    try:
        detect, class_names, category_ids, runs_as = load_detector(weights, device, lowest_threshold(threshold), precision,
                                                          images[:CALIBRATION_IMAGES])
    except (WeightsError, ExportError, ValueError) as err:
        fail(str(err))
    wanted = [c.strip() for c in classes.split(",")] if classes else None
    if wanted and (missing := [c for c in wanted if c not in class_names]):
        fail(f"--classes {', '.join(missing)}: not classes of this model ({', '.join(class_names)})")
    out = out or free_folder(Path("runs") / "predict")
    options = PredictOptions(conf=threshold, classes=wanted, batch_size=batch_size, draw=draw, every=every)
    columns = (TextColumn("predict"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[rate]}"))
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("predict", total=len(images) or None, rate="")

        def advance(count: int) -> None:
            progress.advance(task, count)
            elapsed = progress.tasks[0].elapsed or 1e-9
            progress.update(task, rate=f"{progress.tasks[0].completed / elapsed:.1f} img/s")

        try:
            result = run(detect, class_names, images, videos, out, options, progress=advance)
        except torch.OutOfMemoryError:
            fail(f"out of GPU memory with --batch-size {batch_size}; try --batch-size {max(batch_size // 2, 1)}", 1)
    written = write_outputs(result.results, out, formats, category_ids)
    for problem in problems + result.failures:
        console.print(f"[yellow]skipped:[/] {problem}", highlight=False, soft_wrap=True)
    count = sum(len(r["detections"]) for r in result.results)
    rate = len(result.results) / result.seconds if result.seconds else 0.0
    console.print(f"{len(result.results)} images, {count} detections, {rate:.1f} images/s ({runs_as}); "
                  f"results in {out} ({', '.join(p.name for p in written)})", highlight=False)
    return 1 if problems or result.failures else 0
