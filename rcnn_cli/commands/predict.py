"""``rcnn predict``: check arguments, load the detector through the settings rule, run, report."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..data.sources import expand_sources
from ..errors import JobFailed, UsageError
from ..files import numbered_folder
from ..predict.runner import PredictOptions as RunnerOptions
from ..predict.runner import lowest_threshold, read_conf
from ..predict.runner import run as run_detector
from ..predict.writers import write_outputs
from ..settings import resolve
from . import console, lower_score_floor, say, tiling_note, weights_or_default

FORMATS = ("json", "csv", "coco", "voc", "yolo")


@dataclass
class PredictOptions:
    sources: list[str]
    weights: Path | str | None = None     # None: the default COCO-pretrained weights (model/zoo.py)
    overrides: list[str] = field(default_factory=list)
    config_dir: Path | None = None
    out: Path | None = None
    formats: list[str] = field(default_factory=lambda: ["json"])
    conf: str = "0.25"
    classes: str | None = None
    batch_size: int = 4
    every: int = 1
    draw: bool = True
    save_video: bool = False
    tile: int | None = None          # overlapping tiles of this many px for huge pictures
    overlap: float = 0.2
    device: str | None = None        # shorthand for device=...
    precision: str | None = None     # shorthand for model.precision=...


def shorthand(overrides: list[str], **options: str | None) -> list[str]:
    """``--device cuda`` is ``device=cuda`` typed last: options go through the same rule."""
    keys = {"device": "device", "precision": "model.precision"}
    return list(overrides) + [f"{keys[name]}={value}" for name, value in options.items() if value is not None]


def run(options: PredictOptions) -> int:
    from ..data.samples import CALIBRATION_IMAGES, CHECK_IMAGES
    from ..runtime.predictor import load_predictor

    formats = [f.strip().lower() for value in options.formats for f in value.split(",") if f.strip()]
    if unknown := [f for f in formats if f not in FORMATS]:
        raise UsageError(f"--format {unknown[0]}: use one of {', '.join(FORMATS)}")
    weights = weights_or_default(options.weights)
    try:
        threshold = read_conf(options.conf)
    except ValueError as err:
        raise UsageError(str(err)) from None
    images, videos, problems = expand_sources(options.sources)
    if not images and not videos:
        raise UsageError("no images or videos found in " + ", ".join(options.sources)
                         + (f" ({problems[0]})" if problems else ""))
    overrides = shorthand(options.overrides, device=options.device, precision=options.precision)
    settings = resolve("predict", overrides, weights=weights, config_dir=options.config_dir)
    lower_score_floor(settings, lowest_threshold(threshold))
    for note in settings.notes:
        say(f"note: {note}")
    from ..data.images import read_decodable_chw

    calibration = read_decodable_chw(images[:CALIBRATION_IMAGES]) if settings.cfg.model.precision == "int8" else []
    # a reduced precision is checked on the model's validation images, else on the first inputs
    predictor = load_predictor(settings.cfg, settings.checkpoint, calibration, typed=settings.typed,
                               sources=[str(p) for p in images[:CHECK_IMAGES]])
    wanted = [c.strip() for c in options.classes.split(",")] if options.classes else None
    if wanted and (missing := [c for c in wanted if c not in predictor.class_names]):
        raise UsageError(f"--classes {', '.join(missing)}: not classes of this model "
                         f"({', '.join(predictor.class_names)})")
    if predictor.decision is not None:
        say(predictor.decision.line())
    out = options.out or numbered_folder(Path("runs") / "predict")
    runner_options = RunnerOptions(conf=threshold, classes=wanted, batch_size=options.batch_size, draw=options.draw,
                                   every=options.every, save_video=options.save_video, tile=options.tile,
                                   overlap=options.overlap, nms_iou=float(settings.cfg.model.box_nms_thresh))
    if options.tile:
        tiling_note(options.tile, settings.cfg.model)
    result = _run_with_progress(predictor, images, videos, out, runner_options)
    written = write_outputs(result.results, out, formats, predictor.category_ids, predictor.class_names)
    written += result.videos
    for problem in problems + result.failures:
        console.print(f"[yellow]skipped:[/] {escape(problem)}", highlight=False, soft_wrap=True)
    count = sum(len(r["detections"]) for r in result.results)
    rate = len(result.results) / result.seconds if result.seconds else 0.0
    say(f"{len(result.results)} images, {count} detections, {rate:.1f} images/s ({predictor.runs_as} on "
        f"{predictor.device.type}); results in {out} ({', '.join(p.name for p in written)})")
    return 1 if problems or result.failures else 0


def _run_with_progress(predictor, images, videos, out, options):
    import torch

    columns = (TextColumn("predict"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[rate]}"))
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("predict", total=len(images) or None, rate="")

        def advance(count: int) -> None:
            progress.advance(task, count)
            elapsed = progress.tasks[0].elapsed or 1e-9
            progress.update(task, rate=f"{progress.tasks[0].completed / elapsed:.1f} img/s")

        try:
            return run_detector(predictor.detect, predictor.class_names, images, videos, out, options,
                                progress=advance)
        except torch.OutOfMemoryError:
            size = options.batch_size
            raise JobFailed(f"out of GPU memory with --batch-size {size}; try --batch-size {max(size // 2, 1)}"
                            ) from None
