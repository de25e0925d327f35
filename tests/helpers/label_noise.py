"""A copy of (part of) a shared set (BCCD in VOC, face-mask in COCO) with label errors planted on purpose,
and how many of them a ranked list of label issues finds. The shared files are only read; the copy lives
in a temporary folder."""

from __future__ import annotations

import json
import random
import shutil
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CLASSES = ("RBC", "WBC", "Platelets")
KINDS = ("deleted", "relabelled", "shifted")


@dataclass
class Planted:
    """kind; image: file name; true_box: where the object is (xyxy); labelled_box: what the copy's
    XML now says (None when deleted); label / new_label: the class before and after."""

    kind: str
    image: str
    true_box: list[float]
    labelled_box: list[float] | None
    label: str
    new_label: str


def copy_bccd(source: Path, dest: Path, split: str, count: int | None = None) -> list[str]:
    """Copies the first ``count`` images of ``split`` (their JPEGs and XMLs) into a VOC folder at
    ``dest`` whose train, val and test lists all name them; returns their stems."""
    stems = (source / "ImageSets" / "Main" / f"{split}.txt").read_text().split()[:count]
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (dest / sub).mkdir(parents=True, exist_ok=True)
    for stem in stems:
        shutil.copy(source / "Annotations" / f"{stem}.xml", dest / "Annotations" / f"{stem}.xml")
        shutil.copy(source / "JPEGImages" / f"{stem}.jpg", dest / "JPEGImages" / f"{stem}.jpg")
    for name in ("train", "val", "test"):
        (dest / "ImageSets" / "Main" / f"{name}.txt").write_text("\n".join(stems) + "\n")
    return stems


@dataclass
class Picture:
    """One picture's labels as the planting sees them, whatever the file format: boxes xyxy in pixels."""

    image: str
    width: float
    height: float
    boxes: list[list[float]]
    labels: list[str]


def choose_errors(pictures: list[Picture], per_kind: int, seed: int, classes: tuple[str, ...],
                  all_classes: tuple[str, ...]) -> list[tuple[int, int, Planted]]:
    """Which boxes to delete, relabel and shift (``per_kind`` each, at most one per picture, among the boxes
    of ``classes``; a relabel picks another of ``all_classes``): (picture index, box index, Planted) each.
    The format's own code writes them; both formats draw the same random numbers for the same pictures."""
    rng = random.Random(seed)

    def candidates(picture: Picture) -> list[int]:
        return [i for i, (box, label) in enumerate(zip(picture.boxes, picture.labels))
                if _positive(box) and label in classes]

    eligible = [index for index, picture in enumerate(pictures) if candidates(picture)]
    chosen = rng.sample(eligible, 3 * per_kind)
    planned = []
    for kind, index in zip([k for k in KINDS for _ in range(per_kind)], chosen):
        picture = pictures[index]
        box_index = rng.choice(candidates(picture))
        box, label = picture.boxes[box_index], picture.labels[box_index]
        if kind == "deleted":
            error = Planted(kind, picture.image, box, None, label, "")
        elif kind == "relabelled":
            new = rng.choice([c for c in all_classes if c != label])
            error = Planted(kind, picture.image, box, box, label, new)
        else:
            moved = _shifted(box, picture.width, picture.height, rng)
            error = Planted(kind, picture.image, box, moved, label, label)
        planned.append((index, box_index, error))
    return planned


def voc_box(obj) -> list[float]:
    box = obj.find("bndbox")
    return [float(box.find(k).text) for k in ("xmin", "ymin", "xmax", "ymax")]


def _voc_picture(tree) -> Picture:
    root, size = tree.getroot(), tree.getroot().find("size")
    objects = list(root.iter("object"))
    return Picture(root.find("filename").text, float(size.find("width").text), float(size.find("height").text),
                   [voc_box(o) for o in objects], [o.find("name").text for o in objects])


def plant_errors(root: Path, per_kind: int, seed: int, classes: tuple[str, ...] = CLASSES) -> list[Planted]:
    """Deletes, relabels and shifts ``per_kind`` boxes each in the VOC copy at ``root``, chosen at random
    among the boxes of ``classes``, at most one planted error per image; a shift moves the box by 60-100%
    of its width and height (IoU with where the object is: 0 to 0.14). Zero-size boxes (BCCD has two)
    are never chosen."""
    files = sorted((root / "Annotations").glob("*.xml"))
    trees = [ET.parse(xml) for xml in files]
    planned = choose_errors([_voc_picture(tree) for tree in trees], per_kind, seed, classes, CLASSES)
    for index, box_index, error in planned:
        tree = trees[index]
        obj = list(tree.getroot().iter("object"))[box_index]
        if error.kind == "deleted":
            tree.getroot().remove(obj)
        elif error.kind == "relabelled":
            obj.find("name").text = error.new_label
        else:
            for key, value in zip(("xmin", "ymin", "xmax", "ymax"), error.labelled_box):
                obj.find("bndbox").find(key).text = str(int(round(value)))
        tree.write(files[index])
    return [error for _, _, error in planned]


def plant_coco_errors(source_json: Path, dest_json: Path, per_kind: int, seed: int,
                      classes: tuple[str, ...] | None = None) -> list[Planted]:
    """The same planting in a COCO instances file: reads ``source_json`` (never written), writes the
    corrupted copy to ``dest_json``. A deleted box's annotation is removed, a relabelled one gets another
    category's id, a shifted one a new bbox of the same size (floats, as COCO allows). ``classes``
    (category names) defaults to every category; crowd boxes (ignored by evaluation) are never chosen."""
    data = json.loads(source_json.read_text())
    names = {c["id"]: c["name"] for c in data["categories"]}
    all_classes = tuple(names[i] for i in sorted(names))
    by_image = {image["id"]: [] for image in data["images"]}
    for annotation in data["annotations"]:
        if not annotation.get("iscrowd"):
            by_image[annotation["image_id"]].append(annotation)
    images = sorted(data["images"], key=lambda image: image["file_name"])
    pictures = [Picture(image["file_name"], float(image["width"]), float(image["height"]),
                        [coco_xyxy(a["bbox"]) for a in by_image[image["id"]]],
                        [names[a["category_id"]] for a in by_image[image["id"]]]) for image in images]
    planned = choose_errors(pictures, per_kind, seed, classes or all_classes, all_classes)
    ids = {name: cid for cid, name in names.items()}
    deleted = set()
    for index, box_index, error in planned:
        annotation = by_image[images[index]["id"]][box_index]
        if error.kind == "deleted":
            deleted.add(id(annotation))
        elif error.kind == "relabelled":
            annotation["category_id"] = ids[error.new_label]
        else:
            x0, y0, x1, y1 = error.labelled_box
            annotation["bbox"] = [x0, y0, annotation["bbox"][2], annotation["bbox"][3]]
            error.labelled_box = [x0, y0, x0 + annotation["bbox"][2], y0 + annotation["bbox"][3]]
    data["annotations"] = [a for a in data["annotations"] if id(a) not in deleted]
    temp = dest_json.with_name(f".{dest_json.name}.tmp")
    temp.write_text(json.dumps(data))
    temp.replace(dest_json)
    return [error for _, _, error in planned]


def coco_xyxy(bbox: list[float]) -> list[float]:
    return [float(bbox[0]), float(bbox[1]), float(bbox[0]) + float(bbox[2]), float(bbox[1]) + float(bbox[3])]


def _positive(box: list[float]) -> bool:
    return box[2] > box[0] and box[3] > box[1]


def _shifted(box: list[float], width: float, height: float, rng: random.Random) -> list[float]:
    w, h = box[2] - box[0], box[3] - box[1]
    dx = w * rng.uniform(0.6, 1.0) * rng.choice((-1, 1))
    dy = h * rng.uniform(0.6, 1.0) * rng.choice((-1, 1))
    x0 = min(max(box[0] + dx, 0.0), width - w)       # kept inside the picture, whole
    y0 = min(max(box[1] + dy, 0.0), height - h)
    return [x0, y0, x0 + w, y0 + h]


def iou(a: list[float], b: list[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def found_in_top(planted: list[Planted], issues: list[dict], top: int) -> list[Planted]:
    """The planted errors that one of the first ``top`` issues points at: an issue on the same image
    whose box overlaps the error's labelled box or the object's true box at IoU 0.5 or more."""
    shown = issues[:top]
    found = []
    for error in planted:
        places = [b for b in (error.labelled_box, error.true_box) if b is not None]
        if any(Path(issue["image"]).name == error.image and any(iou(issue["box"], b) >= 0.5 for b in places)
               for issue in shown):
            found.append(error)
    return found


def shuffled(issues: list[dict], seed: int = 0) -> list[dict]:
    """The same issues in a random order: what a ranking that knows nothing would give."""
    order = np.random.default_rng(seed).permutation(len(issues))
    return [issues[i] for i in order]
