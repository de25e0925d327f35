"""The built-in synthetic ``shapes`` set: circles, squares and triangles on plain backgrounds.

Generated deterministically from a seed on first use, written as real COCO files + JPEGs so that
it goes through the same loader as users' data. Kept easy on purpose: ``make demo`` trains a
detector on it from scratch on a CPU in minutes.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ["circle", "square", "triangle"]
COLOURS = [(220, 40, 40), (40, 160, 60), (40, 80, 220), (230, 170, 20), (150, 60, 190), (20, 170, 180)]
VAL_FRACTION = 0.15
FORMAT_VERSION = 1


def ensure_shapes(root: str | Path, num_images: int = 2000, image_size: int = 192, seed: int = 0
                  ) -> dict[str, tuple[Path, Path]]:
    """Generate the set into ``root`` unless it is already there with the same parameters.

    Returns split -> (COCO json path, images folder) for "train" and "val".
    """
    root = Path(root)
    params = {"num_images": int(num_images), "image_size": int(image_size), "seed": int(seed),
              "version": FORMAT_VERSION}
    stamp = root / "params.json"
    if not (stamp.is_file() and json.loads(stamp.read_text()) == params):
        _generate_atomically(root, params)
    return {split: (root / "annotations" / f"{split}.json", root / "images") for split in ("train", "val")}


def _generate_atomically(root: Path, params: dict) -> None:
    """Write into a temp folder beside ``root`` and swap it in, so a crash never leaves half a set."""
    root.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}-"))
    try:
        write_shapes(temp, params["num_images"], params["image_size"], params["seed"])
        (temp / "params.json").write_text(json.dumps(params))
        if root.exists():
            shutil.rmtree(root)
        os.replace(temp, root)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise


def write_shapes(folder: Path, num_images: int, image_size: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True)
    num_val = max(1, round(num_images * VAL_FRACTION))
    splits = {"val": range(num_val), "train": range(num_val, num_images)}
    categories = [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(CLASSES)]
    coco = {split: {"images": [], "annotations": [], "categories": categories} for split in splits}
    annotation_id = 1
    for index in range(num_images):
        split = "val" if index < num_val else "train"
        image, objects = draw_image(rng, image_size)
        name = f"{index:05d}.jpg"
        image.save(folder / "images" / name, quality=92)
        coco[split]["images"].append({"id": index, "file_name": name, "width": image_size, "height": image_size})
        for label, (x1, y1, x2, y2) in objects:
            coco[split]["annotations"].append({
                "id": annotation_id, "image_id": index, "category_id": label, "iscrowd": 0,
                "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1)})
            annotation_id += 1
    (folder / "annotations").mkdir()
    for split, data in coco.items():
        (folder / "annotations" / f"{split}.json").write_text(json.dumps(data))


def draw_image(rng: np.random.Generator, size: int) -> tuple[Image.Image, list[tuple[int, list[int]]]]:
    """One image and its objects [(label 1..3, [x1, y1, x2, y2])]; about 10% have none."""
    background = tuple(int(v) for v in rng.integers(170, 256, size=3))
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    count = 0 if rng.random() < 0.1 else int(rng.integers(1, 5))
    objects: list[tuple[int, list[int]]] = []
    scale = size / 192
    for _ in range(count * 10):          # a few tries per object to respect the overlap limit
        if len(objects) == count:
            break
        side = int(rng.integers(int(24 * scale), int(80 * scale) + 1))
        x1, y1 = (int(v) for v in rng.integers(0, size - side, size=2))
        box = [x1, y1, x1 + side, y1 + side]
        if any(_overlap(box, other) > 0.3 for _, other in objects):
            continue
        label = int(rng.integers(1, len(CLASSES) + 1))
        colour = COLOURS[int(rng.integers(len(COLOURS)))]
        if label == 1:
            draw.ellipse(box, fill=colour)
        elif label == 2:
            draw.rectangle([x1, y1, x1 + side - 1, y1 + side - 1], fill=colour)
        else:
            draw.polygon([(x1 + side / 2, y1), (x1, y1 + side - 1), (x1 + side - 1, y1 + side - 1)], fill=colour)
        objects.append((label, box))
    noise = rng.normal(0, 6, size=(size, size, 3))
    pixels = np.clip(np.asarray(image, np.float32) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(pixels), objects


def _overlap(a: list[int], b: list[int]) -> float:
    """Intersection over the smaller box's area: how much of one shape the other can hide."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    return w * h / min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
