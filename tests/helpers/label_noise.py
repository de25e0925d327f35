"""A copy of (part of) the shared BCCD set with label errors planted on purpose, and how many of them
a ranked list of label issues finds. The shared files are only read; the copy lives in tmp_path."""

from __future__ import annotations

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


def _boxes(obj) -> list[float]:
    box = obj.find("bndbox")
    return [float(box.find(k).text) for k in ("xmin", "ymin", "xmax", "ymax")]


def plant_errors(root: Path, per_kind: int, seed: int, classes: tuple[str, ...] = CLASSES) -> list[Planted]:
    """Deletes, relabels and shifts ``per_kind`` boxes each in the VOC copy at ``root``, chosen at random
    among the boxes of ``classes``, at most one planted error per image; a shift moves the box by 60-100%
    of its width and height (IoU with where the object is: 0 to 0.14). Zero-size boxes (BCCD has two)
    are never chosen."""
    rng = random.Random(seed)

    def candidates(tree) -> list:
        return [o for o in tree.getroot().iter("object") if _positive(_boxes(o)) and o.find("name").text in classes]

    files = [x for x in sorted((root / "Annotations").glob("*.xml")) if candidates(ET.parse(x))]
    chosen = rng.sample(files, 3 * per_kind)
    planted = []
    for kind, xml in zip([k for k in KINDS for _ in range(per_kind)], chosen):
        tree = ET.parse(xml)
        obj = rng.choice(candidates(tree))
        box, label = _boxes(obj), obj.find("name").text
        image = tree.getroot().find("filename").text
        if kind == "deleted":
            tree.getroot().remove(obj)
            planted.append(Planted(kind, image, box, None, label, ""))
        elif kind == "relabelled":
            new = rng.choice([c for c in CLASSES if c != label])
            obj.find("name").text = new
            planted.append(Planted(kind, image, box, box, label, new))
        else:
            moved = _shifted(box, tree, rng)
            for key, value in zip(("xmin", "ymin", "xmax", "ymax"), moved):
                obj.find("bndbox").find(key).text = str(int(round(value)))
            planted.append(Planted(kind, image, box, moved, label, label))
        tree.write(xml)
    return planted


def _positive(box: list[float]) -> bool:
    return box[2] > box[0] and box[3] > box[1]


def _shifted(box: list[float], tree, rng: random.Random) -> list[float]:
    size = tree.getroot().find("size")
    width, height = float(size.find("width").text), float(size.find("height").text)
    w, h = box[2] - box[0], box[3] - box[1]
    dx = w * rng.uniform(0.6, 1.0) * rng.choice((-1, 1))
    dy = h * rng.uniform(0.6, 1.0) * rng.choice((-1, 1))
    x0 = min(max(box[0] + dx, 0.0), width - w)       # kept inside the picture, whole
    y0 = min(max(box[1] + dy, 0.0), height - h)
    return [x0, y0, x0 + w, y0 + h]


def _iou(a: list[float], b: list[float]) -> float:
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
        if any(Path(issue["image"]).name == error.image and any(_iou(issue["box"], b) >= 0.5 for b in places)
               for issue in shown):
            found.append(error)
    return found


def shuffled(issues: list[dict], seed: int = 0) -> list[dict]:
    """The same issues in a random order: what a ranking that knows nothing would give."""
    order = np.random.default_rng(seed).permutation(len(issues))
    return [issues[i] for i in order]
