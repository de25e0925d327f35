"""Data-layer defects of issue 15, each shown on real images: VOC paths leaving the image folder,
EXIF-rotated photos labelled in their stored pixels, train-only data without validation, and the
image size limit."""

from __future__ import annotations

import json
import shutil
import struct
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path

import numpy as np
import pytest
from helpers import BCCD
from PIL import Image
from test_data_formats import voc_xml

from rcnn_cli.data.images import ImageReadError, image_size, open_image, read_rgb
from rcnn_cli.data.inspection.check import build_report
from rcnn_cli.data.pipeline.dataset import DetectionDataset
from rcnn_cli.data.readers.load import load_dataset
from rcnn_cli.settings.resolve import load_config


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
    # The declared size is trusted at load (issue 17: no image opened), as for COCO ...
    assert (record.width, record.height) == (640, 480) and len(loaded.problems) == 0
    assert record.num_boxes == 20                              # every BCCD box kept, none clipped away
    with Image.open(path) as opened:
        stored = np.asarray(opened.convert("RGB"))              # PIL leaves EXIF alone unless asked
    # ... and the first read turns the boxes with the photo.
    item_image, target = DetectionDataset(loaded.splits["train"])[0]
    upright = item_image.permute(1, 2, 0).numpy()              # what training and drawing decode
    assert upright.shape == (640, 480, 3)
    for before, after in zip(bccd_boxes("BloodImage_00000"), target["boxes"].numpy(), strict=True):
        turned = np.asarray(Image.fromarray(crop(stored, before)).transpose(UPRIGHT[orientation]))
        assert np.array_equal(crop(upright, after), turned)    # the same cells, turned upright
    # `rcnn data check` says so.
    (problem,) = build_report(loaded)["problems"]
    assert problem["kind"] == "unrotated_annotation" and "orientation" in problem["examples"][0]


def test_a_voc_photo_without_a_declared_size_gets_its_upright_size_from_the_header(tmp_path, bccd_root):
    exif_photo(tmp_path, 6, (0, 0))                           # no usable <size>: the header decides at load
    (record,) = flat_voc(tmp_path).splits["train"]
    assert (record.width, record.height) == (480, 640)


def test_boxes_on_the_upright_photo_are_kept_as_they_are(tmp_path, bccd_root):
    # CVAT / Roboflow style: size and boxes of the displayed (upright) photo; orientation 6 turns
    # the stored 640x480 clockwise, so stored (x, y) shows at (480 - y, x).
    upright_boxes = [[480 - y2, x1, 480 - y1, x2] for x1, y1, x2, y2 in bccd_boxes("BloodImage_00000")]
    exif_photo(tmp_path, 6, (480, 640), upright_boxes)
    loaded = flat_voc(tmp_path)
    (record,) = loaded.splits["train"]
    assert (record.width, record.height) == (480, 640) and len(loaded.problems) == 0
    assert record.boxes.tolist() == upright_boxes


def dataset_cfg(*overrides: str):
    return load_config(list(overrides)).dataset


def held_out(loaded) -> tuple[int, int]:
    train, val = ({r.path for r in loaded.splits[s]} for s in ("train", "val"))
    assert not train & val
    return len(train), len(val)


def test_coco_without_a_val_file_holds_out_val_fraction_of_train(facemask_root):
    args = ["dataset=coco", f"dataset.train_json={facemask_root}/annotations/custom_train.json",
            f"dataset.train_images={facemask_root}/train2017"]
    loaded = load_dataset(dataset_cfg(*args), ("train", "val", "test"))
    assert held_out(loaded) == (542, 135)                    # 677 images, val_fraction 0.2
    assert any("135 of 677" in note and "dataset.val_fraction=0.2" in note for note in loaded.notes)
    only_val = load_dataset(dataset_cfg(*args), ("val",))   # as eval asks for it: the same 135
    assert [r.path for r in only_val.splits["val"]] == [r.path for r in loaded.splits["val"]]
    other = load_dataset(dataset_cfg(*args, "dataset.split_seed=1"))
    assert {r.path for r in other.splits["val"]} != {r.path for r in loaded.splits["val"]}


def test_roboflow_export_with_only_a_train_folder_gets_a_val_split(tmp_path, facemask_root):
    data = json.loads((facemask_root / "annotations" / "custom_train.json").read_text())
    data["images"] = data["images"][:10]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in {i["id"] for i in data["images"]}]
    (tmp_path / "train").mkdir()
    for image in data["images"]:
        shutil.copy(facemask_root / "train2017" / image["file_name"], tmp_path / "train")
    (tmp_path / "train" / "_annotations.coco.json").write_text(json.dumps(data))
    loaded = load_dataset(dataset_cfg("dataset=coco", f"dataset.root={tmp_path}"), ("train", "val", "test"))
    assert held_out(loaded) == (8, 2) and "test" not in loaded.splits
    assert len(loaded.problems) == 0


def test_yolo_with_only_a_train_folder_gets_a_val_split(tmp_path, bccd_root):
    (tmp_path / "data.yaml").write_text("names: [Platelets, RBC, WBC]\ntrain: images/train\n")
    (tmp_path / "labels" / "train").mkdir(parents=True)
    for source in sorted((bccd_root / "JPEGImages").glob("*.jpg"))[:10]:
        copy = tmp_path / "images" / "train" / source.name
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, copy)
        (tmp_path / "labels" / "train" / f"{source.stem}.txt").write_text("1 0.5 0.5 0.2 0.2\n")
    loaded = load_dataset(dataset_cfg("dataset=yolo", f"dataset.root={tmp_path}", "dataset.val_fraction=0.3"))
    assert held_out(loaded) == (7, 3)
    assert any("3 of 10" in note and "dataset.split_seed=0" in note for note in loaded.notes)


def png_header(path: Path, width: int, height: int) -> Path:
    """A valid PNG header claiming ``width`` x ``height`` pixels, with no image data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IEND", b""))
    return path


def test_an_image_just_over_max_image_pixels_is_refused_and_the_rest_loads(tmp_path, bccd_root):
    over = bccd_copy("BloodImage_00000", tmp_path)                        # 640x480 = 307,200 px
    under = bccd_copy("BloodImage_00001", tmp_path)
    Image.open(under).crop((0, 0, 640, 479)).save(under)                 # 306,560 px
    loaded = flat_voc(tmp_path, "dataset.max_image_pixels=307199")
    assert [r.path.name for r in loaded.splits["train"]] == ["BloodImage_00001.jpg"]
    (problem,) = loaded.problems.by_kind()["unreadable_image"]
    assert problem.file == str(over) and "\n" not in problem.detail
    assert "307,200 pixels" in problem.detail and "dataset.max_image_pixels=307,199" in problem.detail
    assert len(flat_voc(tmp_path, "dataset.max_image_pixels=307200").splits["train"]) == 2
    with pytest.raises(ImageReadError, match="BloodImage_00000.jpg.*max_image_pixels"):
        read_rgb(over, max_pixels=307199)
    assert read_rgb(over, max_pixels=307200).shape == (480, 640, 3)


def test_the_default_limit_is_the_stated_one_not_twice_it(tmp_path):
    limit = load_config(["dataset=voc"]).dataset.max_image_pixels
    assert limit == 12_000 * 12_000
    # Pillow only warns between its limit and twice that: such a header used to pass as 12001x12000.
    bomb = png_header(tmp_path / "bomb.png", 12_001, 12_000)
    for read in (image_size, read_rgb):
        with pytest.raises(ImageReadError, match=f"bomb.png: 12001x12000 is 144,012,000 pixels, over .*{limit:,}"):
            read(bomb)
    with open_image(png_header(tmp_path / "fits.png", 12_000, 12_000)) as opened:   # the limit itself passes
        assert opened.size == (12_000, 12_000)
