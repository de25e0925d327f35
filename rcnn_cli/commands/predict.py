"""``rcnn predict``: check arguments, load the detector through the settings rule, run, report."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from ..data.sources import OUTPUT_MARKER, expand_sources
from ..errors import JobFailed, UsageError
from ..files import numbered_folder, write_text, writes_into
from ..predict.ensemble import load_ensemble
from ..predict.runner import PredictOptions as RunnerOptions
from ..predict.runner import check_thresholds, lowest_threshold, read_conf
from ..predict.runner import run as run_detector
from ..predict.writers import write_outputs
from ..settings.resolve import resolve
from . import cannot_write_there, console, default_output, plain, say, tiling_note, weights_or_default
from .options import PredictOptions, shorthand

FORMATS = ("json", "csv", "coco", "voc", "yolo")
PREDICT_FOLDER = "predict"      # under runs_root, numbered, unless --out names another
# Each result as it is produced, one JSON line: what a run killed outright (SIGKILL, power loss) leaves.
JOURNAL = "predictions.jsonl"


def typed_overrides(options: PredictOptions) -> list[str]:
    return shorthand(options.overrides, device=options.device, precision=options.precision,
                     tta="true" if options.tta else None)


def run(options: PredictOptions) -> int:
    formats = [f.strip().lower() for value in options.formats for f in value.split(",") if f.strip()]
    if unknown := [f for f in formats if f not in FORMATS]:
        raise UsageError(f"--format {unknown[0]}: use one of {', '.join(FORMATS)}")
    weights = weights_or_default(options.weights)
    try:
        threshold = read_conf(options.conf)
    except ValueError as err:
        raise UsageError(str(err)) from None
    if not options.sources and options.overrides:
        # `rcnn predict a=b.jpg` for a file that is not there: the argument was read as a key=value override
        raise UsageError(f"no images or videos named ({options.overrides[0]} was read as a key=value override; "
                         f"write ./{options.overrides[0]} for a file of that name)")
    images, videos, problems = expand_sources(options.sources)
    if not images and not videos:
        raise UsageError("no images or videos found in " + ", ".join(options.sources)
                         + (f" ({problems[0]})" if problems else ""))
    if options.out:            # a wrong --out is one line before the weights are read
        check_out(options.out, images + videos)
    settings = resolve("predict", typed_overrides(options), weights=weights, config_dir=options.config_dir,
                       score_floor=lowest_threshold(threshold))
    out = options.out or numbered_folder(default_output(settings.cfg, PREDICT_FOLDER))   # a new one: holds no input
    for note in settings.notes:
        say(f"note: {note}")
    with claimed(out), writes_into(out):
        return _predict(options, settings, images, videos, problems, out, threshold, formats)


def check_out(out: Path, inputs: list[Path]) -> None:
    """--out is a folder that holds none of the inputs, however either is spelled (relative, through a
    symlink, ``.``): its pictures are named after the inputs (``a.jpg`` -> ``OUT/a.jpg``, and YOLO's
    ``OUT/yolo/images/train/a.jpg``), so an input anywhere under it could be overwritten, and what is
    written there would be read as input by the next run over the same folder."""
    if os.path.lexists(out) and not os.path.isdir(out):      # os.path: a name too long is written, and refused, below
        raise UsageError(f"--out {out}: a file, not a folder; name a folder for the results "
                         "(default runs_root/predict)")
    homes = {Path(os.path.abspath(out)), out.resolve()}
    for path in inputs:
        places = {Path(os.path.abspath(path)), path.resolve()}     # the link itself, and the file it names
        if any(place.is_relative_to(home) for place in places for home in homes):
            raise UsageError(f"--out {out}: holds the input {path}, which its outputs could overwrite; "
                             "name a folder outside the inputs' folders (default runs_root/predict)")


@contextmanager
def claimed(out: Path) -> Iterator[None]:
    """Creates --out with ``OUTPUT_MARKER`` in it before the model is loaded: a folder that cannot be
    written is one line now, not an OSError after the whole inference, and the marker keeps later runs
    from reading this one's pictures as inputs. A run that fails before writing anything removes the
    folder it created."""
    fresh = not os.path.lexists(out)
    try:
        write_text(out / OUTPUT_MARKER, "rcnn predict wrote this folder; rcnn predict never reads it as input\n")
    except OSError as err:
        raise cannot_write_there(f"--out {out}", err) from None
    try:
        yield
    except BaseException:
        if fresh and [p.name for p in out.iterdir()] == [OUTPUT_MARKER]:
            shutil.rmtree(out, ignore_errors=True)
        raise


def _predict(options: PredictOptions, settings, images, videos, problems, out: Path, threshold, formats) -> int:
    from ..data.samples import CHECK_IMAGES, calibration_images
    from ..export.compiled import load_fastest

    calibration = (calibration_images([str(p) for p in images]).images if settings.cfg.model.precision == "int8"
                   else [])
    # a reduced precision is checked on the model's validation images, else on the first inputs
    sources = [str(p) for p in images[:CHECK_IMAGES]]
    if settings.members:
        predictor = load_ensemble(settings, calibration=calibration, sources=sources)
    else:
        predictor = load_fastest(settings.cfg, settings.checkpoint, calibration, typed=settings.typed,
                                 sources=sources, source=settings.weights, say=say,
                                 status=lambda text: console.status(plain(text)))
    wanted = [c.strip() for c in options.classes.split(",")] if options.classes else None
    if wanted and (missing := [c for c in wanted if c not in predictor.class_names]):
        raise UsageError(f"--classes {', '.join(missing)}: not classes of this model "
                         f"({', '.join(predictor.class_names)})")
    check_thresholds(threshold, predictor.class_names, options.conf)
    if predictor.decision is not None:
        say(predictor.decision.line())
    data = settings.cfg.dataset       # pictures are decoded as training decodes them: same limit, same workers
    runner_options = RunnerOptions(conf=threshold, classes=wanted, batch_size=options.batch_size, draw=options.draw,
                                   every=options.every, save_video=options.save_video, tile=options.tile,
                                   overlap=options.overlap, nms_iou=float(settings.cfg.model.box_nms_thresh),
                                   num_workers=data.num_workers, max_pixels=int(data.max_image_pixels),
                                   nms_agnostic=bool(settings.cfg.model.box_nms_agnostic))
    if options.tile:
        tiling_note(options.tile, settings.cfg.model)
    result = _run_with_progress(predictor, images, videos, out, runner_options)
    written = write_outputs(result.results, out, formats, predictor.category_ids, predictor.class_names)
    written += result.videos
    (out / JOURNAL).unlink(missing_ok=True)       # folded into the final files
    if result.interrupted:
        done = sum(1 for r in result.results if "#frame" not in r["image"])
        say(f"interrupted after {done} of {len(images)} images; their results are in {out} "
            f"({', '.join(p.name for p in written)})")
        return 130
    for problem in problems + result.failures:
        console.print(Text.assemble(("skipped:", "yellow"), " ", plain(problem)), highlight=False, soft_wrap=True)
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
                                progress=advance, journal=out / JOURNAL)
        except torch.OutOfMemoryError:
            size = options.batch_size
            raise JobFailed(f"out of GPU memory with --batch-size {size}; try --batch-size {max(size // 2, 1)}"
                            ) from None
