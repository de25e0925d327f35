"""The data side at scale (``rcnn benchmark --data-scale N``): a generated COCO-format set of N
distinct small images with COCO-like box counts and class skew, and how long (and how much memory)
loading its annotations, ``rcnn data check``, COCO evaluation and the DataLoader take."""

from __future__ import annotations

import gc
import os
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ..files import write_json

CLASSES = 80                     # as COCO
EVAL_IMAGES = 5000               # evaluation is timed on at most this many images ...
DETECTIONS = 100                 # ... with this many detections each (COCO's cap)
LOADER_IMAGES = 2000             # the DataLoader is timed on at most this many images
COCO_TRAIN = 118_287             # images in COCO train2017, the size extrapolated to
IMAGE_SIZE = (64, 48)            # stored pixels of every generated image (cheap to write and read)
LINKS_PER_PICTURE = 50_000       # generate(distinct=False): ext4 allows 65,000 links to one file


def class_weights(count: int = CLASSES) -> np.ndarray:
    """Zipf-like skew (1/rank^1.1) as COCO has it: the first class ("person") takes ~20% of boxes,
    the last ~0.2%."""
    weights = 1.0 / np.arange(1, count + 1) ** 1.1
    return weights / weights.sum()


def generate(folder: Path, count: int, seed: int = 0, val_fraction: float = 0.1, distinct: bool = True
             ) -> dict[str, Path]:
    """``count`` distinct images (random 6 x 8 colour blocks: unrelated perceptual hashes) in
    ``folder/images`` and COCO files ``train.json`` / ``val.json`` (``val_fraction`` of them) declaring
    their sizes, with 1 + Poisson(6.3) boxes per image (COCO's mean of 7.3), classes drawn by
    ``class_weights``, box sizes log-uniform from 4 px to the whole image.

    distinct=False: the image files are hard links to a few pictures (one per ``LINKS_PER_PICTURE``
    images), for timing annotation loading at COCO's size, where writing 118k pictures would take
    longer than what is timed; the annotations are the same as with distinct pictures."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    pictures = np.random.default_rng(seed + 1)      # apart from ``rng``: the annotations do not depend on it
    images_dir = folder / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    width, height = IMAGE_SIZE
    weights = class_weights()
    entries: dict[str, list] = {"train": [], "val": []}
    boxes: dict[str, list] = {"train": [], "val": []}
    num_val = int(round(count * val_fraction))
    for index in range(count):
        split = "val" if index < num_val else "train"
        name = f"{index:07d}.jpg"
        if distinct or index % LINKS_PER_PICTURE == 0:
            blocks = pictures.integers(0, 256, (6, 8, 3), dtype=np.uint8)
            Image.fromarray(blocks).resize(IMAGE_SIZE, Image.NEAREST).save(images_dir / name, quality=90)
        else:
            os.link(images_dir / f"{index - index % LINKS_PER_PICTURE:07d}.jpg", images_dir / name)
        entries[split].append({"id": index + 1, "file_name": name, "width": width, "height": height})
        num = 1 + int(rng.poisson(6.3))
        sides = np.exp(rng.uniform(np.log(4), np.log(min(width, height)), (num, 2)))
        corners = rng.uniform(0, 1, (num, 2)) * (np.array([width, height]) - sides)
        labels = rng.choice(CLASSES, num, p=weights) + 1
        for (x, y), (w, h), label in zip(corners.tolist(), sides.tolist(), labels.tolist()):
            boxes[split].append({"id": len(boxes["train"]) + len(boxes["val"]) + 1, "image_id": index + 1,
                                 "category_id": label, "bbox": [round(x, 2), round(y, 2), round(w, 2), round(h, 2)],
                                 "area": round(w * h, 2), "iscrowd": 0})
    categories = [{"id": c + 1, "name": f"class{c + 1}"} for c in range(CLASSES)]
    paths = {"images": images_dir}
    for split in ("train", "val"):
        paths[split] = folder / f"{split}.json"
        write_json(paths[split], {"images": entries[split], "annotations": boxes[split], "categories": categories},
                   indent=None)
    return paths


@contextmanager
def timed(into: dict[str, Any], key: str) -> Iterator[None]:
    """Wall time of the block as ``into[<key>_s]``."""
    gc.collect()
    start = time.perf_counter()
    try:
        yield
    finally:
        into[f"{key}_s"] = round(time.perf_counter() - start, 3)


def peak_memory(into: dict[str, Any], key: str, work: Callable[[], Any]) -> Any:
    """Runs ``work`` again under tracemalloc: the peak of memory it allocated (Python objects and
    numpy arrays; not Pillow's decode buffers) as ``into[<key>_peak_mb]``. Separate from the timed
    run, which tracemalloc would slow."""
    gc.collect()
    tracemalloc.start()
    try:
        out = work()
        into[f"{key}_peak_mb"] = round(tracemalloc.get_traced_memory()[1] / 2**20, 1)
    finally:
        tracemalloc.stop()
    return out


def fake_detections(targets: list[dict], seed: int = 0, per_image: int = DETECTIONS) -> list[dict]:
    """``per_image`` detections per image: each true box found (jittered) with a high score, the
    rest false alarms of random classes and places with low scores, as a trained model's output."""
    rng = np.random.default_rng(seed)
    width, height = IMAGE_SIZE
    out = []
    for target in targets:
        boxes, labels = target["boxes"], target["labels"]
        found = boxes + rng.normal(0, 1.5, boxes.shape)
        extra = per_image - len(boxes)
        xy = rng.uniform(0, [width - 4, height - 4], (extra, 2))
        wh = rng.uniform(4, 24, (extra, 2))
        all_boxes = np.concatenate([found, np.concatenate([xy, xy + wh], 1)])[:per_image]
        all_boxes[:, 2:] = np.maximum(all_boxes[:, 2:], all_boxes[:, :2] + 1)
        scores = np.concatenate([rng.uniform(0.5, 1, len(boxes)), rng.uniform(0, 0.6, extra)])[:per_image]
        all_labels = np.concatenate([labels, rng.integers(1, CLASSES + 1, extra)])[:per_image]
        out.append({"boxes": all_boxes.astype(np.float32), "scores": scores.astype(np.float32),
                    "labels": all_labels.astype(np.int64)})
    return out


def faster_coco_eval_alone(predictions: list[dict], targets: list[dict]) -> float:
    """Seconds faster-coco-eval itself takes on the same input, given ready COCO dicts and a
    result array (the floor our evaluation is compared with)."""
    import contextlib
    import io

    from faster_coco_eval import COCO, COCOeval_faster

    images = [{"id": i} for i in range(len(targets))]
    annotations = []
    for i, target in enumerate(targets):
        for (x1, y1, x2, y2), label in zip(target["boxes"].tolist(), target["labels"].tolist()):
            annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": int(label),
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    rows = np.concatenate([np.column_stack([np.full(len(p["boxes"]), i), p["boxes"][:, :2],
                                            p["boxes"][:, 2:] - p["boxes"][:, :2], p["scores"], p["labels"]])
                           for i, p in enumerate(predictions)])
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        truth = COCO()
        truth.dataset = {"images": images, "annotations": annotations,
                         "categories": [{"id": c + 1, "name": str(c + 1)} for c in range(CLASSES)]}
        truth.createIndex()
        evaluator = COCOeval_faster(truth, truth.loadRes(rows), iouType="bbox", print_function=lambda *a: None)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return round(time.perf_counter() - start, 3)


def loader_throughput(records: list, workers: int, batch: int = 8) -> float:
    """Images per second through DetectionDataset + DataLoader (decode, collate), no model, after
    the first batch (worker start-up is not counted)."""
    from torch.utils.data import DataLoader

    from ..data.pipeline.dataset import DetectionDataset, collate

    loader = iter(DataLoader(DetectionDataset(records), batch_size=batch, num_workers=workers, collate_fn=collate))
    next(loader)                      # workers started: steady state from here
    start = time.perf_counter()
    seen = sum(len(images) for images, _ in loader)
    return round(seen / (time.perf_counter() - start), 1)


def measure(count: int, folder: Path, say: Callable[[str], None] = lambda line: None) -> dict[str, Any]:
    """Every figure for one generated set of ``count`` images (written under ``folder``)."""
    from ..data.inspection.check import build_report
    from ..data.readers.load import load_dataset
    from ..eval.coco import coco_metrics
    from ..settings.resolve import load_config

    result: dict[str, Any] = {"images": count}
    say(f"{count} images: generating")
    with timed(result, "generate"):
        paths = generate(folder, count)
    cfg = load_config(["dataset=coco", f"dataset.train_json={paths['train']}", f"dataset.val_json={paths['val']}",
                       f"dataset.train_images={paths['images']}", f"dataset.val_images={paths['images']}"]).dataset
    say(f"{count} images: loading annotations")
    with timed(result, "load"):
        loaded = load_dataset(cfg, ("train", "val"))
    peak_memory(result, "load", lambda: load_dataset(cfg, ("train", "val")))
    records = [r for split in ("train", "val") for r in loaded.splits[split]]
    result["boxes"] = int(sum(r.num_boxes for r in records))
    say(f"{count} images: data check")
    with timed(result, "check"):
        report = build_report(loaded)
    peak_memory(result, "check", lambda: build_report(loaded))
    result["check_problems"] = len(report["problems"])
    result["check_duplicate_groups"] = len(report["duplicates"]) + len(report["leakage"])
    evaluated = records[:EVAL_IMAGES]
    targets = [{"boxes": r.boxes, "labels": r.labels} for r in evaluated]
    predictions = fake_detections(targets)
    result["eval_images"], result["eval_detections_per_image"] = len(evaluated), DETECTIONS
    say(f"{count} images: evaluating {len(evaluated)} x {DETECTIONS} detections")
    with timed(result, "eval"):
        metrics = coco_metrics(predictions, targets, CLASSES)
    result["eval_map"] = round(metrics["map"], 4)
    result["eval_faster_coco_eval_alone_s"] = faster_coco_eval_alone(predictions, targets)
    result["eval_ratio_to_faster_coco_eval"] = round(result["eval_s"] / result["eval_faster_coco_eval_alone_s"], 2)
    result["loader_images"] = min(len(records), LOADER_IMAGES)
    for workers in (0, 2):
        say(f"{count} images: DataLoader, {workers} workers")
        result[f"loader_images_per_s_workers{workers}"] = loader_throughput(records[:LOADER_IMAGES], workers)
    return result


# Figures that grow with the number of images, extrapolated to COCO's size.
LINEAR = ("load_s", "load_peak_mb", "check_s", "check_peak_mb")


def extrapolate(points: list[dict[str, Any]], target: int = COCO_TRAIN) -> dict[str, Any]:
    """Each LINEAR figure at ``target`` images, by the straight line through the two largest
    measured points (not measured: an estimate; never below the largest measured value)."""
    if len(points) < 2:
        return {}
    a, b = sorted(points, key=lambda p: p["images"])[-2:]
    out: dict[str, Any] = {"images": target, "method": f"linear through the measured {a['images']} and "
                                                      f"{b['images']} images (an estimate, not measured)"}
    for key in LINEAR:
        if key in a and key in b:
            slope = (b[key] - a[key]) / (b["images"] - a["images"])
            out[key] = round(max(b[key] + slope * (target - b["images"]), b[key]), 1)   # never below measured
    return out


def measure_load(count: int, folder: Path, say: Callable[[str], None] = lambda line: None) -> dict[str, Any]:
    """Annotation loading alone on ``count`` images whose files are links to a few pictures
    (``generate(distinct=False)``): measured at sizes where the full ``measure`` would take long."""
    from ..data.readers.load import load_dataset
    from ..settings.resolve import load_config

    result: dict[str, Any] = {"images": count, "pictures": "linked to a few pictures"}
    say(f"{count} images: generating annotations")
    with timed(result, "generate"):
        paths = generate(folder, count, distinct=False)
    cfg = load_config(["dataset=coco", f"dataset.train_json={paths['train']}", f"dataset.val_json={paths['val']}",
                       f"dataset.train_images={paths['images']}", f"dataset.val_images={paths['images']}"]).dataset
    result["annotations_mb"] = round(sum(paths[s].stat().st_size for s in ("train", "val")) / 2**20, 1)
    say(f"{count} images: loading annotations")
    with timed(result, "load"):
        loaded = load_dataset(cfg, ("train", "val"))
    result["boxes"] = int(sum(r.num_boxes for split in ("train", "val") for r in loaded.splits[split]))
    result["problems"] = len(loaded.problems)
    del loaded
    peak_memory(result, "load", lambda: load_dataset(cfg, ("train", "val")))
    return result


def scale_benchmark(counts: list[int], say: Callable[[str], None] = lambda line: None,
                    workdir: Path | None = None, load_counts: list[int] = ()) -> dict[str, Any]:
    """``measure`` for each count and ``measure_load`` for each of ``load_counts`` (each in a
    temporary folder, removed after), and the extrapolation."""
    from .machine import machine_info

    points, load_points = [], []
    for count in counts:
        with tempfile.TemporaryDirectory(prefix="rcnn-scale-", dir=workdir) as folder:
            points.append(measure(count, Path(folder), say))
    for count in load_counts:
        with tempfile.TemporaryDirectory(prefix="rcnn-scale-", dir=workdir) as folder:
            load_points.append(measure_load(count, Path(folder), say))
    result = {"machine": machine_info(), "points": points, "extrapolated": extrapolate(points)}
    if load_points:
        result["load_only"] = load_points
    return result
