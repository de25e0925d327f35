"""Data-layer defects of issue 15, each shown on real images: VOC paths leaving the image folder,
EXIF-rotated photos labelled in their stored pixels, train-only data without validation, and the
image size limit."""

from __future__ import annotations

import shutil
from pathlib import Path

from conftest import BCCD
from test_data_formats import voc_xml

from rcnn_cli.config import load_config
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
