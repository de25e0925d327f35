"""Running a detector over many inputs: decoding in DataLoader workers, batching, thresholds,
drawing, and a progress bar with images/s. A bad input is reported and skipped."""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..data.draw import draw_boxes
from ..data.images import ImageReadError, read_chw
from ..data.pipeline.datamodule import worker_count
from ..data.sources import Item, OutputNames, video_frames
from ..errors import UsageError, nearest_hint
from ..files import atomic_path
from ..inference.tiling import detect_tiled
from .limits import PREDICT

# A detector for the runner: uint8 (3, H, W) tensors -> per image {"boxes", "scores", "labels"}.
DetectFn = Callable[[list[torch.Tensor]], list[dict[str, torch.Tensor]]]


@dataclass
class PredictOptions:
    conf: float | dict[str, float] = PREDICT.conf   # one threshold, or per class name
    classes: list[str] | None = None        # keep only these class names
    batch_size: int = PREDICT.batch_size
    draw: bool = True
    every: int = 1                          # video: every N-th frame
    save_video: bool = False                # video: also write <video stem>_annotated.mp4
    tile: int | None = None                 # huge pictures: overlapping tiles of this many px (inference/tiling.py)
    overlap: float = PREDICT.tile_overlap
    nms_iou: float = 0.5                    # merging tiles: the model's box_nms_thresh
    nms_agnostic: bool = False              # merging tiles: the model's box_nms_agnostic
    num_workers: Any = "auto"               # decoding workers: rcnn predict passes dataset.num_workers
    max_pixels: int | None = None           # larger pictures are refused: dataset.max_image_pixels (None: conf/'s)


@dataclass
class PredictRun:
    results: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0
    videos: list[Path] = field(default_factory=list)      # annotated videos written (--save-video)
    interrupted: bool = False                             # Ctrl-C: ``results`` holds what finished


def read_conf(value: str) -> float | dict[str, float]:
    """``--conf 0.3`` or ``--conf thresholds.json`` (as ``rcnn eval`` writes): scores, each in [0, 1]. NaN
    would show every detection or none without a word, and 2 none at all."""
    try:
        number = float(value)
    except ValueError:
        pass
    else:
        if not 0 <= number <= 1:
            raise ValueError(f"--conf {value}: must be a score in [0, 1] (or a thresholds.json file)")
        return number
    path = Path(value)
    if not os.path.isfile(path):          # os.path: a name past 255 bytes is no file, not an OSError
        raise ValueError(f"--conf {value}: neither a number nor a thresholds.json file")
    try:
        data = json.loads(path.read_text())
        thresholds = {str(k): float(v) for k, v in data.items()}
    except (json.JSONDecodeError, AttributeError, TypeError, ValueError, OverflowError):
        raise ValueError(f"--conf {value}: must be a JSON object {{class name: score in [0, 1]}}") from None
    if not thresholds:
        raise ValueError(f"--conf {value}: holds no thresholds; must be {{class name: score in [0, 1]}}")
    if wrong := [name for name, threshold in thresholds.items() if not 0 <= threshold <= 1]:
        raise ValueError(f"--conf {value}: the threshold of {wrong[0]!r} is {thresholds[wrong[0]]:g}; "
                         "must be a score in [0, 1]")
    return thresholds


def check_thresholds(conf: float | dict[str, float], class_names: list[str], given: str) -> None:
    """Per-class thresholds name every class of the model: ``rcnn eval`` writes one for each, so a file
    missing some was made for another model or edited, and any stand-in value would be a guess (1.01
    dropped every detection of the class without a word; the global --conf would apply a threshold
    the user did not choose). given: the --conf argument, for the message."""
    if not isinstance(conf, dict):
        return
    if missing := [name for name in class_names if name not in conf]:
        extra = [name for name in conf if name not in class_names]
        hint = (f"; the file names {', '.join(extra)}, which {'is' if len(extra) == 1 else 'are'} not "
                f"{'a class' if len(extra) == 1 else 'classes'} of this model: {nearest_hint(extra[0], missing)}"
                if extra else f" (this model's classes: {', '.join(class_names)})")
        raise UsageError(f"--conf {given}: no threshold for {', '.join(missing)}{hint}")


def lowest_threshold(conf: float | dict[str, float]) -> float:
    return min(conf.values()) if isinstance(conf, dict) and conf else float(conf if not isinstance(conf, dict) else 0.0)


class _ImageFiles(Dataset):
    def __init__(self, paths: Sequence[Path], max_pixels: int | None = None):
        self.paths = list(paths)
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        try:
            return index, read_chw(self.paths[index], self.max_pixels), None
        except ImageReadError as err:
            return index, None, str(err)


def as_list(batch: list) -> list:
    """DataLoader ``collate_fn`` that keeps the items as they are. A module-level function, not a lambda:
    spawned workers (the default on macOS and Windows, forkserver on newer Python) must pickle it."""
    return batch


def _batches(images: list[Path], videos: list[Path], options: PredictOptions, failures: list[str]):
    """Yields lists of (Item, (3, H, W) uint8 tensor)."""
    workers = worker_count(options.num_workers)
    loader = DataLoader(_ImageFiles(images, options.max_pixels), batch_size=options.batch_size, num_workers=workers,
                        collate_fn=as_list)
    for batch in loader:
        good = []
        for index, image, error in batch:
            if error:
                failures.append(error)
            else:
                good.append((Item(images[index]), image))
        if good:
            yield good
    for video in videos:
        batch = []
        try:
            for frame_index, frame in video_frames(video, options.every):
                batch.append((Item(video, frame_index), torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)))
                if len(batch) == options.batch_size:
                    yield batch
                    batch = []
        except ValueError as err:
            failures.append(str(err))
        if batch:
            yield batch


def keep_detections(detection: dict[str, torch.Tensor], class_names: list[str], options: PredictOptions) -> dict:
    labels = detection["labels"].cpu()
    scores = detection["scores"].cpu()
    if isinstance(options.conf, dict):
        thresholds = torch.tensor([options.conf[name] for name in class_names])     # every class: check_thresholds
        keep = scores >= thresholds[labels - 1]
    else:
        keep = scores >= float(options.conf)
    if options.classes:
        wanted = torch.tensor([name in options.classes for name in class_names])
        keep &= wanted[labels - 1]
    return {key: value.cpu()[keep] for key, value in detection.items()}


def to_result(name: str, output_name: str, image: torch.Tensor, detection: dict,
              class_names: list[str]) -> dict[str, Any]:
    """output_name: what the files written for this input are called (see sources.OutputNames)."""
    return {"image": name, "output_name": output_name, "width": int(image.shape[-1]), "height": int(image.shape[-2]),
            "detections": [{"label": class_names[int(label) - 1], "label_id": int(label),
                            "score": round(float(score), 5), "box": [round(float(v), 2) for v in box]}
                           for box, score, label in zip(detection["boxes"], detection["scores"], detection["labels"])]}


def run(detect: DetectFn, class_names: list[str], images: list[Path], videos: list[Path], out: Path,
        options: PredictOptions, progress=None, journal: Path | None = None) -> PredictRun:
    """Detect on every input; draws pictures into ``out`` (``<output name>.jpg``) when ``options.draw``.
    journal: a JSON Lines file that gets each result as soon as its picture is written, so a run killed
    outright still leaves its finished work. Ctrl-C ends the run with ``interrupted`` set, not an
    exception: ``results`` is then exactly the inputs finished, for the caller to write."""
    run_info = PredictRun()
    start = time.perf_counter()
    output_names = OutputNames()
    videos_out = AnnotatedVideos(out, options.every) if options.save_video else None
    batches = _batches(images, videos, options, run_info.failures)
    try:
        with open(journal, "w", encoding="utf-8") if journal else contextlib.nullcontext() as lines:
            for batch in batches:
                for result in _detect_batch(detect, class_names, batch, out, options, output_names, videos_out):
                    if lines:
                        lines.write(json.dumps(result) + "\n")
                        lines.flush()
                    run_info.results.append(result)
                if progress:
                    progress(len(batch))
        if videos_out:
            run_info.videos = videos_out.finish()
    except KeyboardInterrupt:
        run_info.interrupted = True
    finally:
        batches.close()           # stops the DataLoader workers now, not at garbage collection
        if videos_out:
            videos_out.abandon()
    run_info.seconds = time.perf_counter() - start
    return run_info


def _detect_batch(detect: DetectFn, class_names: list[str], batch: list, out: Path, options: PredictOptions,
                  output_names: OutputNames, videos_out: AnnotatedVideos | None):
    """Yields each input's result once its picture is written: a result is listed only with its picture."""
    detections = (detect([image for _, image in batch]) if not options.tile else
                  [detect_tiled(detect, image, options.tile, options.overlap, options.batch_size, options.nms_iou,
                                nms_agnostic=options.nms_agnostic)
                   for _, image in batch])
    for (item, image), detection in zip(batch, detections):
        kept = keep_detections(detection, class_names, options)
        name = output_names(item)
        if options.draw or (videos_out and item.frame is not None):
            picture = _drawn(image, kept, class_names)
            if videos_out and item.frame is not None:
                videos_out.add(item.path, picture)
            if options.draw:
                with atomic_path(out / f"{name}.jpg") as temp:
                    picture.save(temp, quality=92)
        yield to_result(item.label, name, image, kept, class_names)


def _drawn(image: torch.Tensor, detection: dict, class_names: list[str]):
    captions = [f"{class_names[int(label) - 1]} {float(score):.2f}"
                for score, label in zip(detection["scores"], detection["labels"])]
    return draw_boxes(image.permute(1, 2, 0).numpy(), detection["boxes"].numpy(), captions,
                      detection["labels"].tolist())


class AnnotatedVideos:
    """``<out>/<video stem>_annotated.mp4`` per source video: the drawn frames at the source's frame
    rate divided by ``every`` (so the clip plays at real speed). Each file is written beside its final
    name and renamed when complete; an interrupted run leaves no half video."""

    def __init__(self, out: Path, every: int):
        self.out, self.every = out, max(every, 1)
        self.writers: dict[Path, tuple] = {}      # source -> (cv2.VideoWriter, temp path, final path)

    def add(self, source: Path, picture) -> None:
        import cv2

        frame = cv2.cvtColor(np.asarray(picture), cv2.COLOR_RGB2BGR)
        if source not in self.writers:
            capture = cv2.VideoCapture(str(source))
            fps = (capture.get(cv2.CAP_PROP_FPS) or 25.0) / self.every
            capture.release()
            final = self.out / f"{source.stem}_annotated.mp4"
            temp = final.with_name(f".{final.stem}.tmp.mp4")
            final.parent.mkdir(parents=True, exist_ok=True)
            writer = cv2.VideoWriter(str(temp), cv2.VideoWriter_fourcc(*"mp4v"), fps, frame.shape[1::-1])
            self.writers[source] = (writer, temp, final)
        self.writers[source][0].write(frame)

    def finish(self) -> list[Path]:
        import os

        finished = []
        for writer, temp, final in self.writers.values():
            writer.release()
            os.replace(temp, final)
            finished.append(final)
        self.writers = {}
        return finished

    def abandon(self) -> None:
        for writer, temp, _ in self.writers.values():
            writer.release()
            temp.unlink(missing_ok=True)
        self.writers = {}
