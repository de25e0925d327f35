"""`rcnn data check` through the real command line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from helpers import BCCD, require_shared, run_rcnn
from PIL import Image

from rcnn_cli.data.inspection.check import build_report
from rcnn_cli.data.inspection.duplicates import Fingerprint, find_duplicate_groups, near_components
from rcnn_cli.data.readers.load import load_dataset
from rcnn_cli.settings.resolve import load_config


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
    assert (leak["kind"], leak["splits"], leak["count"]) == ("near", "train/val", 2) and report["duplicates"] == []
    assert leak["per_split"] == {"train": 1, "val": 1}
    assert sorted(Path(f).name for f in leak["files"]) == ["BloodImage_00037.jpg", "BloodImage_00038.jpg"]
    pictures = sorted(p.name for p in (tmp_path / "show").glob("*.png"))
    assert pictures == ["001_train_BloodImage_00001.png", "002_train_BloodImage_00003.png",
                        "003_train_BloodImage_00004.png"]
    assert Image.open(tmp_path / "show" / pictures[0]).size == (640, 480)
    assert "zero_size_box" in out.stdout
    # Class imbalance of the training split: RBC boxes 11.4x the platelets' -> a repeat-factor suggestion.
    assert report["balance"]["suggestion"]["setting"] == "dataset.repeat_factor_thresh=1"
    assert "class imbalance (train): boxes RBC 2381 / Platelets 209 = 11.39x" in out.stdout
    assert "try dataset.repeat_factor_thresh=1" in " ".join(out.stdout.split())
    # The default anchors (32..512 at min_size 800) fit every training box by shape.
    assert {name: c["unmatched"] for name, c in report["anchor_fit"]["classes"].items()} == {
        "Platelets": 0, "RBC": 0, "WBC": 0}
    assert "Platelets 0.0% of 209, RBC 0.0% of 2381, WBC 0.0% of 214" in " ".join(out.stdout.split())


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
    assert named(report["leakage"]) == {("exact", "train/val", "t0.jpg", "v_exact.jpg"),
                                        ("near", "train/val", "t1.jpg", "v_near.jpg")}
    assert named(report["duplicates"]) == {("near", "train", "t2.jpg", "t_again.png")}
    assert "leakage" in out.stdout


def named(groups) -> set[tuple]:
    return {(g["kind"], g["splits"], *sorted(Path(f).name for f in g["files"])) for g in groups}


def noise(path: Path, seed: int, size: tuple[int, int] = (48, 32)) -> None:
    """A small picture of its own (random blocks: unrelated perceptual hashes)."""
    blocks = np.random.default_rng(seed).integers(0, 256, (4, 6, 3), dtype=np.uint8)
    Image.fromarray(blocks).resize(size, Image.NEAREST).save(path)


def test_many_copies_of_one_picture_are_one_group_not_every_pair(tmp_path):
    # 200 + 100 byte-identical copies across train/val (a pair list would hold 44,850 entries), a
    # re-encoded copy within train, and distinct pictures that must stay out of every group.
    images = tmp_path / "img"
    images.mkdir()
    noise(images / "same.jpg", 0)
    for split, count in (("t", 200), ("v", 100)):
        for i in range(count):
            shutil.copy(images / "same.jpg", images / f"{split}{i:03d}.jpg")
    Image.open(images / "same.jpg").save(images / "t_png.png")
    for i in range(4):
        noise(images / f"other{i}.png", i + 1)
    coco_file(tmp_path / "train.json", [f"t{i:03d}.jpg" for i in range(200)] + ["t_png.png", "other0.png",
                                                                                 "other1.png", "other2.png"])
    coco_file(tmp_path / "val.json", [f"v{i:03d}.jpg" for i in range(100)] + ["other3.png"])
    cfg = load_config(["dataset=coco", f"dataset.train_json={tmp_path}/train.json", f"dataset.train_images={images}",
                       f"dataset.val_json={tmp_path}/val.json", f"dataset.val_images={images}"]).dataset
    report = build_report(load_dataset(cfg, ("train", "val")))
    assert report["duplicates"] == []
    (group,) = report["leakage"]
    assert (group["kind"], group["splits"], group["count"]) == ("near", "train/val", 301)
    assert group["per_split"] == {"train": 201, "val": 100}
    assert sorted(Path(f).name for f in group["files"]) == sorted(
        [f"t{i:03d}.jpg" for i in range(200)] + ["t_png.png"] + [f"v{i:03d}.jpg" for i in range(100)])


def test_identical_groups_are_exact_and_look_alikes_join_through_each_other():
    base = 0x0123_4567_89AB_CDEF
    far = 0xFEDC_BA98_7654_3210
    # a chain: each 4 bits from the last, 8 bits from base to the end: one component
    chain = [base, base ^ 0xF, base ^ 0xFF, far, far ^ (1 << 63)]
    labels = near_components(np.array(chain, np.uint64))
    assert labels.tolist() == [0, 0, 0, 3, 3]
    prints = [Fingerprint("a", base), Fingerprint("a", base), Fingerprint("b", far), Fingerprint("c", None),
              Fingerprint("c", None), Fingerprint("d", base ^ 0x3F)]
    items = [("train", Path(f"f{i}")) for i in range(6)]
    items[1] = ("val", Path("f1"))
    assert named(find_duplicate_groups(items, prints[:2])) == {("exact", "train/val", "f0", "f1")}
    groups = find_duplicate_groups(items, prints)
    assert [(g["kind"], g["splits"], g["count"], g["files"]) for g in groups] == [
        ("near", "train/val", 3, ["f0", "f1", "f5"]), ("exact", "train", 2, ["f3", "f4"])]


def test_strict_with_problems_exits_1_and_a_missing_root_exits_2(tmp_path):
    require_shared()
    strict = run_rcnn("data", "check", "dataset=bccd", f"dataset.root={BCCD}", "dataset.strict=true", cwd=tmp_path)
    assert strict.returncode == 1
    missing = run_rcnn("data", "check", "dataset=voc", f"dataset.root={tmp_path}/nowhere", cwd=tmp_path)
    assert missing.returncode == 2
    assert missing.stderr.strip().count("\n") == 0 and "nowhere" in missing.stderr
