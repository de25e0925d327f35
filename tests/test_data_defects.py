"""Data-layer defects of issue 15, each shown on real images: VOC paths leaving the image folder,
EXIF-rotated photos labelled in their stored pixels, train-only data without validation, and the
image size limit."""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from conftest import BCCD
from PIL import Image
from test_data_formats import voc_xml

from rcnn_cli.config import load_config
from rcnn_cli.data.dataset import DetectionDataset
from rcnn_cli.data.load import load_dataset


def flat_voc(tmp_path: Path, *overrides: str):
    cfg = load_config(["dataset=voc", f"dataset.images={tmp_path}/images", f"dataset.annotations={tmp_path}/xml",
                       "dataset.val_fraction=0", *overrides]).dataset
    return load_dataset(cfg, ("train", "val"))


def bccd_copy(stem: str, folder: Path, name: str | None = None) -> Path:
    """One BCCD image and its XML copied into ``folder/images`` and ``folder/xml`` (as ``name``)."""
    name = name or stem
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "xml").mkdir(parents=True, exist_ok=True)
    shutil.copy(BCCD / "JPEGImages" / f"{stem}.jpg", folder / "images" / f"{name}.jpg")
    text = (BCCD / "Annotations" / f"{stem}.xml").read_text().replace(stem, name)
    (folder / "xml" / f"{name}.xml").write_text(text)
    return folder / "images" / f"{name}.jpg"


def test_voc_filename_leaving_the_image_folder_is_refused(tmp_path, bccd_root):
    bccd_copy("BloodImage_00000", tmp_path)
    (tmp_path / "private").mkdir()
    shutil.copy(bccd_root / "JPEGImages" / "BloodImage_00001.jpg", tmp_path / "private" / "secret.jpg")
    box = [("RBC", (10, 10, 60, 60), False)]
    voc_xml(tmp_path / "xml" / "climb.xml", "../private/secret.jpg", box, size=(640, 480))
    voc_xml(tmp_path / "xml" / "absolute.xml", str(tmp_path / "private" / "secret.jpg"), box, size=(640, 480))
    loaded = flat_voc(tmp_path)
    assert [r.path.name for r in loaded.splits["train"]] == ["BloodImage_00000.jpg"]
    assert all(r.path.resolve().parent == (tmp_path / "images").resolve() for r in loaded.splits["train"])
    unsafe = loaded.problems.by_kind()["unsafe_path"]
    assert sorted(Path(p.file).name for p in unsafe) == ["absolute.xml", "climb.xml"]
    assert "secret.jpg" in unsafe[0].detail
    assert [p.kind for p in loaded.problems.problems] == ["unsafe_path", "unsafe_path"]


# How Pillow turns the stored pixels upright for each EXIF orientation that swaps width and height.
UPRIGHT = {5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
           8: Image.Transpose.ROTATE_90}


def exif_photo(tmp_path: Path, orientation: int, size_in_xml: tuple[int, int], boxes=None) -> Path:
    """BloodImage_00000 (640x480) re-saved with an EXIF orientation tag; its XML declares
    ``size_in_xml`` and has the BCCD boxes (or ``boxes``, in that order)."""
    path = bccd_copy("BloodImage_00000", tmp_path, "photo")
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.open(path).save(path, exif=exif, quality=95)
    xml = tmp_path / "xml" / "photo.xml"
    text = xml.read_text().replace("<width>640</width>", f"<width>{size_in_xml[0]}</width>")
    xml.write_text(text.replace("<height>480</height>", f"<height>{size_in_xml[1]}</height>"))
    if boxes is not None:
        root = ET.parse(xml).getroot()
        for obj, box in zip(root.iter("object"), boxes, strict=True):
            for key, value in zip(("xmin", "ymin", "xmax", "ymax"), box):
                obj.find(f"bndbox/{key}").text = str(value)
        ET.ElementTree(root).write(xml)
    return path


def bccd_boxes(stem: str) -> list[list[float]]:
    root = ET.parse(BCCD / "Annotations" / f"{stem}.xml").getroot()
    return [[float(o.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax")] for o in root.iter("object")]


def crop(pixels: np.ndarray, box) -> np.ndarray:
    x1, y1, x2, y2 = (int(v) for v in box)
    return pixels[y1:y2, x1:x2]


@pytest.mark.parametrize("orientation", [5, 6, 7, 8])
def test_labelimg_boxes_on_stored_pixels_turn_with_the_exif_rotated_photo(tmp_path, bccd_root, orientation):
    path = exif_photo(tmp_path, orientation, (640, 480))     # LabelImg: size and boxes of the stored pixels
    loaded = flat_voc(tmp_path)
    (record,) = loaded.splits["train"]
    assert (record.width, record.height) == (480, 640)
    assert record.num_boxes == 20                              # every BCCD box kept, none clipped away
    assert [p.kind for p in loaded.problems.problems] == ["unrotated_annotation"]
    assert "orientation" in loaded.problems.problems[0].detail
    with Image.open(path) as opened:
        stored = np.asarray(opened.convert("RGB"))              # PIL leaves EXIF alone unless asked
    item_image, target = DetectionDataset(loaded.splits["train"])[0]
    upright = item_image.permute(1, 2, 0).numpy()              # what training and drawing decode
    assert upright.shape == (640, 480, 3) and np.array_equal(target["boxes"].numpy(), record.boxes)
    for before, after in zip(bccd_boxes("BloodImage_00000"), record.boxes, strict=True):
        turned = np.asarray(Image.fromarray(crop(stored, before)).transpose(UPRIGHT[orientation]))
        assert np.array_equal(crop(upright, after), turned)    # the same cells, turned upright


def test_boxes_on_the_upright_photo_are_kept_as_they_are(tmp_path, bccd_root):
    # CVAT / Roboflow style: size and boxes of the displayed (upright) photo; orientation 6 turns
    # the stored 640x480 clockwise, so stored (x, y) shows at (480 - y, x).
    upright_boxes = [[480 - y2, x1, 480 - y1, x2] for x1, y1, x2, y2 in bccd_boxes("BloodImage_00000")]
    exif_photo(tmp_path, 6, (480, 640), upright_boxes)
    loaded = flat_voc(tmp_path)
    (record,) = loaded.splits["train"]
    assert (record.width, record.height) == (480, 640) and len(loaded.problems) == 0
    assert record.boxes.tolist() == upright_boxes
