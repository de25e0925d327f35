"""Pascal VOC XML: VOCdevkit year folders (ImageSets splits) and the flat folders labelling tools
export (one XML per image). Coordinates are used as written (no 1-pixel shift), as LabelImg and
CVAT write them and as torchvision's VOC reference does."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DatasetError
from ..images import IMAGE_EXTENSIONS
from ..records import ProblemLog
from .sanitize import report, safe_join


@dataclass
class VocFile:
    """One parsed XML: image path, declared (width, height), and its objects."""

    xml: Path
    image: Path | None
    declared_size: tuple[int, int] | None
    names: list[str] = field(default_factory=list)
    boxes: list[list[float]] = field(default_factory=list)
    difficult: list[bool] = field(default_factory=list)


def parse_voc_xml(xml_path: Path, images_dir: Path, log: ProblemLog) -> VocFile | None:
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as err:
        line, column = err.position
        report(log, "malformed_annotation", xml_path, f"line {line} column {column}: {str(err).split(':')[0]}")
        return None
    except (OSError, UnicodeError, LookupError, ValueError) as err:   # unreadable, unknown encoding
        report(log, "malformed_annotation", xml_path, str(err).splitlines()[0] if str(err) else type(err).__name__)
        return None
    image = _image_for(xml_path, root.findtext("filename"), images_dir, log)
    parsed = VocFile(xml_path, image, _declared_size(root))
    for index, obj in enumerate(root.iter("object")):
        name, box = (obj.findtext("name") or "").strip(), obj.find("bndbox")
        try:
            coords = [float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")]
        except (AttributeError, TypeError, ValueError):
            report(log, "bad_annotation", xml_path,
                   f"object {index} ({name or 'no name'}): missing or non-numeric bndbox")
            continue
        parsed.names.append(name)
        parsed.boxes.append(coords)
        parsed.difficult.append((obj.findtext("difficult") or "0").strip() in ("1", "true", "True"))
    return parsed


def _declared_size(root: ET.Element) -> tuple[int, int] | None:
    """<size> as written; None when missing, not numbers, or not positive (some tools write 0 x 0
    for images they could not read): the header is read instead."""
    try:
        width, height = int(float(root.findtext("size/width"))), int(float(root.findtext("size/height")))
    except (TypeError, ValueError, OverflowError):
        return None
    return (width, height) if width > 0 and height > 0 else None


def _image_for(xml_path: Path, filename: str | None, images_dir: Path, log: ProblemLog) -> Path | None:
    """The image an XML describes: its <filename> in the image folder, else the file with its stem,
    else <filename> as written, unless that leaves the folder (then None, reported)."""
    if filename:
        path = safe_join(images_dir, Path(filename).name if "\\" not in filename else filename)
        if path is None:
            report(log, "unsafe_path", xml_path, f"filename '{filename}'")
            return None
        if path.is_file():
            return path
    for extension in IMAGE_EXTENSIONS + tuple(e.upper() for e in IMAGE_EXTENSIONS):
        candidate = images_dir / f"{xml_path.stem}{extension}"
        if candidate.is_file():
            return candidate
    if not filename:
        return images_dir / f"{xml_path.stem}.jpg"
    # The name as written may hold sub-folders of the image folder, never ../ or an absolute path.
    path = safe_join(images_dir, filename)
    if path is None:
        report(log, "unsafe_path", xml_path, f"filename '{filename}'")
    return path


def read_split_ids(root: Path, split: str) -> list[str]:
    path = root / "ImageSets" / "Main" / f"{split}.txt"
    if not path.is_file():
        raise DatasetError(f"{path}: split file not found; set dataset.train_split / dataset.val_split "
                           f"to one of {sorted(p.stem for p in path.parent.glob('*.txt')) or 'the existing splits'}")
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


def devkit_files(roots: list[Path], split: str, log: ProblemLog) -> list[VocFile]:
    files = []
    for root in roots:
        if not (root / "Annotations").is_dir():
            raise DatasetError(f"dataset.root {root}: no Annotations/ folder; is this a VOCdevkit year folder "
                               "(e.g. VOCdevkit/VOC2007)? For flat folders use dataset.images= and "
                               "dataset.annotations=")
        for stem in read_split_ids(root, split):
            xml = root / "Annotations" / f"{stem}.xml"
            if not xml.is_file():
                report(log, "malformed_annotation", xml, f"listed in {split}.txt but missing")
                continue
            parsed = parse_voc_xml(xml, root / "JPEGImages", log)
            if parsed is not None:
                files.append(parsed)
    return files


def flat_files(images_dir: Path, annotations_dir: Path, log: ProblemLog) -> list[VocFile]:
    for folder, key in ((images_dir, "images"), (annotations_dir, "annotations")):
        if not folder.is_dir():
            raise DatasetError(f"dataset.{key} {folder}: folder not found")
    xmls = sorted(annotations_dir.glob("*.xml"))
    if not xmls:
        raise DatasetError(f"dataset.annotations {annotations_dir}: no .xml files found")
    return [f for f in (parse_voc_xml(x, images_dir, log) for x in xmls) if f is not None]

