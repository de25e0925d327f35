"""What ``rcnn predict SOURCE...`` accepts: image files, folders (recursive), glob patterns,
text files listing paths, and videos (every N-th frame)."""

from __future__ import annotations

import errno
import glob
import os
from dataclasses import dataclass
from pathlib import Path

from .images import IMAGE_EXTENSIONS

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm")


@dataclass(frozen=True)
class Item:
    """One picture to run on: an image file, or frame ``frame`` of a video."""

    path: Path
    frame: int | None = None

    @property
    def label(self) -> str:
        """How the results name it: the path as found, or ``<video path>#frame<index>``."""
        return str(self.path) if self.frame is None else f"{self.path}#frame{self.frame}"

    @property
    def stem(self) -> str:
        """The name its files start from: the image's stem, or ``<video stem>_f<index, 6 digits>``."""
        return self.path.stem if self.frame is None else f"{self.path.stem}_f{self.frame:06d}"


class OutputNames:
    """Gives each input of a run its own name for the files written about it: the drawn picture
    ``<name>.jpg`` and the VOC file ``voc/<name>.xml``.

    The name is ``Item.stem``: ``a/cell.jpg`` -> ``cell``, frame 120 of ``clip.mp4`` -> ``clip_f000120``.
    When an earlier input of the run has that name already (``b/cell.jpg`` after ``a/cell.jpg``, or
    ``cell.png`` beside ``cell.jpg``), the input gets the first free one of ``<name>_2``, ``<name>_3``, ...
    Names differing only in case count as taken (case-insensitive file systems). Inputs come in the
    order ``expand_sources`` gives (sorted, images before videos), so the same inputs get the same names
    on every run.
    """

    def __init__(self) -> None:
        self._taken: set[str] = set()

    def __call__(self, item: Item) -> str:
        name, counter = item.stem, 2
        while name.casefold() in self._taken:
            name, counter = f"{item.stem}_{counter}", counter + 1
        self._taken.add(name.casefold())
        return name


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


# Written into every folder ``rcnn predict`` writes to; a folder holding it is never read as input.
# A marker, not a rule about names or places (runs/, --out): it holds for any --out, for a run folder
# moved or renamed later, and for a second ``rcnn predict .`` that finds the first run's runs/predict.
OUTPUT_MARKER = ".rcnn-predictions"


def expand_sources(sources: list[str]) -> tuple[list[Path], list[Path], list[str]]:
    """(image paths, video paths, problems) in a stable order, each path once.

    A folder contributes its image and video files recursively; other files in it are ignored
    (they are not inputs), but a file named explicitly that is not an image is a problem.
    """
    images, videos, problems = _expand(sources, ())
    return _unique(images), _unique(videos), problems


def _expand(sources: list[str], lists: tuple[Path, ...]) -> tuple[list[Path], list[Path], list[str]]:
    """lists: the .txt source lists being read, outermost first, to name a loop instead of recursing."""
    images: list[Path] = []
    videos: list[Path] = []
    problems: list[str] = []
    for source in sources:
        path = Path(source)
        # os.path answers False where pathlib (Python 3.11) raises: a name past 255 bytes, a folder not readable
        if os.path.isdir(path):
            found, skipped = _folder_files(path)
            images += [p for p in found if is_image(p)]
            videos += [p for p in found if p.suffix.lower() in VIDEO_EXTENSIONS]
            problems += skipped
        elif path.suffix.lower() == ".txt" and os.path.isfile(path):
            more_images, more_videos, more_problems = _listed(path, lists)
            images, videos, problems = images + more_images, videos + more_videos, problems + more_problems
        elif path.suffix.lower() in VIDEO_EXTENSIONS and os.path.isfile(path):
            videos.append(path)
        elif os.path.isfile(path):
            images.append(path)          # decoding decides; a non-image is reported then
        elif any(ch in source for ch in "*?["):
            matches = sorted(Path(p) for p in glob.glob(source, recursive=True))
            if not matches:
                problems.append(f"{source}: the pattern matches no files")
            images += [p for p in matches if p.is_file() and is_image(p)]
            videos += [p for p in matches if p.suffix.lower() in VIDEO_EXTENSIONS]
        else:
            problems.append(f"{source}: no such file or folder")
    return images, videos, problems


def _listed(path: Path, lists: tuple[Path, ...]) -> tuple[list[Path], list[Path], list[str]]:
    """The sources a .txt list names; a list that names one being read (itself, or one that names
    it) is read once and the loop named, not followed until Python's recursion limit."""
    real = path.resolve()
    if real in lists:
        chain = [p.name for p in lists[lists.index(real):]] + [path.name]
        return [], [], [f"{' -> '.join(chain)}: the source lists name each other in a loop; read once"]
    listed = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return _expand(listed, (*lists, real))


def _folder_files(folder: Path) -> tuple[list[Path], list[str]]:
    """(every file under ``folder``, sorted; problems). Subfolders ``rcnn predict`` wrote (they hold
    ``OUTPUT_MARKER``) are left out; a link that cannot be followed is named, not silently dropped."""
    files: list[Path] = []
    problems: list[str] = []
    for root, folders, names in os.walk(folder):      # as rglob: links to folders are not followed
        if OUTPUT_MARKER in names:
            folders.clear()
            if Path(root) == folder:
                problems.append(f"{folder}: rcnn predict wrote it (its output is never read as input); "
                                "name its pictures to read them")
            continue
        for name in names:
            child = Path(root) / name
            if child.is_file():
                files.append(child)
            elif problem := _broken_link(child):
                problems.append(problem)
    return sorted(files), problems


def _broken_link(path: Path) -> str | None:
    """Why the link ``path`` leads to no file: a loop (always named, whatever its name) or a missing
    target (named for picture and video names only: editors leave dangling lock links in folders)."""
    try:
        os.stat(path)
    except OSError as err:
        if err.errno == errno.ELOOP:
            return f"{path}: a symlink loop (it leads back to itself)"
        if path.is_symlink() and (is_image(path) or path.suffix.lower() in VIDEO_EXTENSIONS):
            return f"{path}: a symlink that points to nothing ({os.readlink(path)})"
    return None


def _unique(paths: list[Path]) -> list[Path]:
    seen, out = set(), []
    for path in paths:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            out.append(path)
    return out


def video_frames(path: Path, every: int):
    """Yields (frame index, (H, W, 3) uint8 RGB) for every ``every``-th frame of a video."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise ValueError(f"{path}: cannot open the video (unsupported codec or not a video)")
    index = 0
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            if index % max(every, 1) == 0:
                yield index, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            index += 1
    finally:
        capture.release()
