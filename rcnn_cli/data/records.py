"""What every reader (VOC, COCO, YOLO, shapes) produces: image records without pixels, plus the
problems it found. Everything downstream (DataModule, ``rcnn data check``, evaluation) reads these.
YOLO's records are NormalisedRecord: the same attributes, the size read from the image when asked."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class ImageRecord:
    """One image and its annotations, after the reader's policies were applied.

    boxes: (N, 4) float32 xyxy in pixels of the image as decoded (EXIF orientation applied).
    labels: (N,) int64 in 1..C (0 is background and never appears).
    ignore: (N,) bool, VOC ``difficult`` / COCO ``iscrowd``: not trained on (unless the config says
        so) and not counted as misses in evaluation.
    """

    path: Path
    width: int
    height: int
    boxes: np.ndarray
    labels: np.ndarray
    ignore: np.ndarray
    source_id: int | str = ""      # COCO image id, or the VOC/YOLO file stem

    @property
    def num_boxes(self) -> int:
        return int(self.boxes.shape[0])

    @property
    def size_known(self) -> bool:
        """Whether width and height are known without opening the image (see NormalisedRecord)."""
        return True


class NormalisedRecord:
    """An ImageRecord whose boxes are stored as fractions of the image's (upright) width and height,
    as YOLO labels give them: loading opens no image. ``width``, ``height`` and ``boxes`` (pixels,
    as ImageRecord has them) read the image header the first time they are asked for, and raise
    ImageReadError naming the file when it cannot be read; ``resolve`` gives a size already read
    (``rcnn data check``). Code that only needs to know whether the size is known asks ``size_known``.

    fractions: (N, 4) float64 xyxy in 0..1, already checked (``sanitize.clean_boxes``).
    """

    def __init__(self, path: Path, fractions: np.ndarray, labels: np.ndarray, ignore: np.ndarray,
                 source_id: int | str = "", max_pixels: int | None = None):
        self.path, self.fractions, self.labels, self.ignore = path, fractions, labels, ignore
        self.source_id, self.max_pixels = source_id, max_pixels
        self._size: tuple[int, int] | None = None
        self._boxes: np.ndarray | None = None

    @property
    def size_known(self) -> bool:
        return self._size is not None

    def resolve(self, width: int, height: int) -> None:
        """Set the image's decoded (upright) size; the pixel boxes follow from it."""
        self._size = (int(width), int(height))
        self._boxes = (self.fractions * np.array([width, height, width, height], np.float64)).astype(np.float32)

    def _read_size(self) -> tuple[int, int]:
        if self._size is None:
            from .images import image_size

            self.resolve(*image_size(self.path, self.max_pixels))
        return self._size

    @property
    def width(self) -> int:
        return self._read_size()[0]

    @property
    def height(self) -> int:
        return self._read_size()[1]

    @property
    def boxes(self) -> np.ndarray:
        self._read_size()
        return self._boxes

    @property
    def num_boxes(self) -> int:
        return int(self.labels.shape[0])

    def __repr__(self) -> str:
        size = f"{self._size[0]}x{self._size[1]}" if self._size else "size unread"
        return f"NormalisedRecord({self.path}, {size}, {self.num_boxes} boxes)"


def empty_annotations() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return np.zeros((0, 4), np.float32), np.zeros((0,), np.int64), np.zeros((0,), bool)


@dataclass
class Problem:
    kind: str          # short stable id, e.g. "zero_size_box", "missing_image", "malformed_xml"
    file: str          # the file the user has to look at
    detail: str = ""   # what exactly, e.g. "line 12: mismatched tag" or "box 3 is 0x14 px"


@dataclass
class ProblemLog:
    """Every problem a reader found, grouped by kind, with the policy applied to it."""

    problems: list[Problem] = field(default_factory=list)
    policies: dict[str, str] = field(default_factory=dict)   # kind -> what was done ("dropped the box")

    def add(self, kind: str, file: str | Path, detail: str = "", policy: str = "") -> None:
        self.problems.append(Problem(kind, str(file), detail))
        if policy:
            self.policies.setdefault(kind, policy)

    def by_kind(self) -> dict[str, list[Problem]]:
        grouped: dict[str, list[Problem]] = defaultdict(list)
        for problem in self.problems:
            grouped[problem.kind].append(problem)
        return dict(grouped)

    def __len__(self) -> int:
        return len(self.problems)


@dataclass
class LoadedDataset:
    """The configured splits of one dataset.

    class_names: label i -> class_names[i - 1].
    category_ids: label i -> the dataset's own id category_ids[i - 1] (COCO), for writing results
        back in the user's ids; None when the format has no ids of its own.
    splits: "train" / "val" / "test" -> records (a split may be missing).
    """

    class_names: list[str]
    splits: dict[str, list[ImageRecord]]
    problems: ProblemLog = field(default_factory=ProblemLog)
    category_ids: list[int] | None = None
    notes: list[str] = field(default_factory=list)
