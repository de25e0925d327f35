"""`rcnn data check` through the real command line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from helpers import BCCD, require_shared, run_rcnn
from PIL import Image


def coco_file(path: Path, images: list[str]) -> None:
    """A COCO file with one 'cell' box per image (sizes are read from the files)."""
    entries = [{"id": i + 1, "file_name": name,
                **dict(zip(("width", "height"), Image.open(path.parent / "img" / name).size))}
               for i, name in enumerate(images)]
    boxes = [{"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [5, 5, 20, 20], "iscrowd": 0}
             for i in range(len(images))]
    path.write_text(json.dumps({"images": entries, "annotations": boxes, "categories": [{"id": 1, "name": "cell"}]}))


def test_bccd_report_counts_problems_and_leakage(tmp_path):
    require_shared()
    out = run_rcnn("data", "check", "dataset=bccd", f"dataset.root={BCCD}", "--json", str(tmp_path / "r.json"),
                   "--show", "3", "--out", str(tmp_path / "show"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads((tmp_path / "r.json").read_text())
    assert (report["images"], report["boxes"]) == (364, 4886)
    assert report["classes"] == {"Platelets": 361, "RBC": 4153, "WBC": 372}
    (problem,) = report["problems"]
    assert problem["kind"] == "zero_size_box" and problem["count"] == 2
    assert sorted(e.split("/")[-1].split(":")[0] for e in problem["examples"]) == [
        "BloodImage_00338.xml", "BloodImage_00343.xml"]
    assert report["box_sizes"] == {"small": 39, "medium": 1524, "large": 3323}
    assert report["image_size"] == {"min": [640, 480], "max": [640, 480]}
    # Two consecutive microscope frames, one in train and one in val: real leakage in BCCD.
    (leak,) = report["leakage"]
    assert (leak["kind"], leak["splits"]) == ("near", "train/val") and report["duplicates"] == []
    assert sorted(Path(leak[k]).name for k in "ab") == ["BloodImage_00037.jpg", "BloodImage_00038.jpg"]
    pictures = sorted(p.name for p in (tmp_path / "show").glob("*.png"))
    assert pictures == ["001_train_BloodImage_00001.png", "002_train_BloodImage_00003.png",
                        "003_train_BloodImage_00004.png"]
    assert Image.open(tmp_path / "show" / pictures[0]).size == (640, 480)
    assert "zero_size_box" in out.stdout


def test_duplicates_and_train_val_leakage_are_found(tmp_path):
    require_shared()
    images = tmp_path / "img"
    images.mkdir()
    originals = sorted((BCCD / "JPEGImages").glob("*.jpg"))[:3]
    for i, path in enumerate(originals):
        shutil.copy(path, images / f"t{i}.jpg")
    shutil.copy(originals[0], images / "v_exact.jpg")                          # same bytes in val
    Image.open(originals[1]).resize((320, 240)).save(images / "v_near.jpg")    # resized copy in val
    Image.open(originals[2]).save(images / "t_again.png")                       # re-encoded within train
    coco_file(tmp_path / "train.json", ["t0.jpg", "t1.jpg", "t2.jpg", "t_again.png"])
    coco_file(tmp_path / "val.json", ["v_exact.jpg", "v_near.jpg"])
    out = run_rcnn("data", "check", "dataset=coco", f"dataset.train_json={tmp_path}/train.json",
                   f"dataset.train_images={images}", f"dataset.val_json={tmp_path}/val.json",
                   f"dataset.val_images={images}", "--json", str(tmp_path / "r.json"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads((tmp_path / "r.json").read_text())
    def pairs(found):
        return {(d["kind"], d["splits"], *sorted(Path(d[k]).name for k in "ab")) for d in found}

    assert pairs(report["leakage"]) == {("exact", "train/val", "t0.jpg", "v_exact.jpg"),
                                        ("near", "train/val", "t1.jpg", "v_near.jpg")}
    assert pairs(report["duplicates"]) == {("near", "train", "t2.jpg", "t_again.png")}
    assert "leakage" in out.stdout


def test_strict_with_problems_exits_1_and_a_missing_root_exits_2(tmp_path):
    require_shared()
    strict = run_rcnn("data", "check", "dataset=bccd", f"dataset.root={BCCD}", "dataset.strict=true", cwd=tmp_path)
    assert strict.returncode == 1
    missing = run_rcnn("data", "check", "dataset=voc", f"dataset.root={tmp_path}/nowhere", cwd=tmp_path)
    assert missing.returncode == 2
    assert missing.stderr.strip().count("\n") == 0 and "nowhere" in missing.stderr
