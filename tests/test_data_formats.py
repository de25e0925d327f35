"""Readers on the real shared sets (exact counts) and on the layouts users export: flat VOC,
COCO with gaps in its ids, Roboflow folders, YOLO; and the deterministic shapes set."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
from helpers import BCCD, FACEMASK, require_shared
from PIL import Image

from rcnn_cli.data.readers.load import load_dataset
from rcnn_cli.data.readers.shapes import ensure_shapes
from rcnn_cli.settings.resolve import load_config


def dataset_cfg(*overrides: str):
    return load_config(list(overrides)).dataset


def per_class(loaded, split: str) -> dict[str, int]:
    counts = Counter(int(label) for r in loaded.splits[split] for label in r.labels)
    return {loaded.class_names[k - 1]: v for k, v in sorted(counts.items())}


def test_bccd_voc_splits_have_the_exact_counts():
    require_shared()
    loaded = load_dataset(dataset_cfg("dataset=bccd", f"dataset.root={BCCD}"), ("train", "val", "test"))
    assert loaded.class_names == ["Platelets", "RBC", "WBC"]
    assert {s: len(r) for s, r in loaded.splits.items()} == {"train": 205, "val": 87, "test": 72}
    assert per_class(loaded, "train") == {"Platelets": 209, "RBC": 2381, "WBC": 214}
    assert per_class(loaded, "val") == {"Platelets": 83, "RBC": 967, "WBC": 87}
    assert per_class(loaded, "test") == {"Platelets": 69, "RBC": 805, "WBC": 71}
    degenerate = loaded.problems.by_kind()["zero_size_box"]
    assert sorted(Path(p.file).name for p in degenerate) == ["BloodImage_00338.xml", "BloodImage_00343.xml"]
    assert len(loaded.problems) == 2


def test_facemask_coco_keeps_category_zero():
    require_shared()
    loaded = load_dataset(dataset_cfg("dataset=facemask", f"dataset.root={FACEMASK}"))
    assert loaded.class_names == ["mask_weared_incorrect", "with_mask", "without_mask"]
    assert loaded.category_ids == [0, 1, 2]
    assert {s: len(r) for s, r in loaded.splits.items()} == {"train": 677, "val": 171}
    assert per_class(loaded, "train") == {"mask_weared_incorrect": 103, "with_mask": 2443, "without_mask": 560}
    assert per_class(loaded, "val") == {"mask_weared_incorrect": 18, "with_mask": 741, "without_mask": 156}
    assert len(loaded.problems) == 0


def write_image(path: Path, size=(64, 48), mode="RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, 128 if mode == "L" else (120, 130, 140)).save(path)
    return path


def coco_file(path: Path, images: list[str], categories: list[tuple[int, str]], annotations: list[tuple]) -> Path:
    """annotations: (image index, category id, [x, y, w, h], iscrowd)."""
    data = {"images": [{"id": 100 + i, "file_name": name, "width": 64, "height": 48} for i, name in enumerate(images)],
            "categories": [{"id": cid, "name": name} for cid, name in categories],
            "annotations": [{"id": k + 1, "image_id": 100 + i, "category_id": c, "bbox": b, "iscrowd": crowd}
                            for k, (i, c, b, crowd) in enumerate(annotations)]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def test_coco_with_gaps_in_category_ids_round_trips(tmp_path):
    for name in ("a.jpg", "b.jpg"):
        write_image(tmp_path / "img" / name)
    coco_file(tmp_path / "train.json", ["a.jpg", "b.jpg"], [(3, "ant"), (7, "bee"), (12, "cow")],
              [(0, 3, [1, 1, 10, 10], 0), (0, 12, [20, 5, 10, 10], 0), (1, 7, [5, 5, 20, 20], 0),
               (1, 12, [30, 10, 8, 8], 1)])
    cfg = dataset_cfg("dataset=coco", f"dataset.train_json={tmp_path}/train.json",
                      f"dataset.train_images={tmp_path}/img")
    loaded = load_dataset(cfg, ("train",))
    assert loaded.class_names == ["ant", "bee", "cow"] and loaded.category_ids == [3, 7, 12]
    a, b = loaded.splits["train"]
    assert a.labels.tolist() == [1, 3] and b.labels.tolist() == [2, 3]
    assert b.ignore.tolist() == [False, True]               # iscrowd -> ignore region
    assert [loaded.category_ids[label - 1] for label in b.labels] == [7, 12]
    assert a.boxes[1].tolist() == [20, 5, 30, 15]           # xywh -> xyxy


def test_roboflow_export_folder_with_placeholder_category(tmp_path):
    for split in ("train", "valid", "test"):
        write_image(tmp_path / split / "x.jpg")
        coco_file(tmp_path / split / "_annotations.coco.json", ["x.jpg"],
                  [(0, "cells"), (1, "rbc"), (2, "wbc")], [(0, 1, [2, 2, 10, 10], 0), (0, 2, [20, 20, 9, 9], 0)])
    loaded = load_dataset(dataset_cfg("dataset=coco", f"dataset.root={tmp_path}"), ("train", "val", "test"))
    assert sorted(loaded.splits) == ["test", "train", "val"]
    assert loaded.class_names == ["rbc", "wbc"] and loaded.category_ids == [1, 2]
    assert any("cells" in note for note in loaded.notes)


def voc_xml(path: Path, filename: str, objects: list[tuple], size=(64, 48)) -> Path:
    body = "".join(f"<object><name>{n}</name><difficult>{int(d)}</difficult><bndbox><xmin>{b[0]}</xmin>"
                   f"<ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
                   for n, b, d in objects)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"<annotation><filename>{filename}</filename><size><width>{size[0]}</width>"
                    f"<height>{size[1]}</height></size>{body}</annotation>")
    return path


def test_flat_voc_folders_split_by_a_seeded_fraction(tmp_path):
    for i in range(10):
        write_image(tmp_path / "images" / f"im{i}.png")
        # the second half names no <filename>: matched by stem
        voc_xml(tmp_path / "xml" / f"im{i}.xml", f"im{i}.png" if i < 5 else "", [("dog", (1, 1, 20, 20), i == 0)])
    args = ["dataset=voc", f"dataset.images={tmp_path}/images", f"dataset.annotations={tmp_path}/xml",
            "dataset.val_fraction=0.3"]
    first, again = load_dataset(dataset_cfg(*args)), load_dataset(dataset_cfg(*args))
    assert (len(first.splits["train"]), len(first.splits["val"])) == (7, 3)
    assert [r.path for r in first.splits["val"]] == [r.path for r in again.splits["val"]]
    other = load_dataset(dataset_cfg(*args, "dataset.split_seed=1"))
    assert [r.path for r in other.splits["val"]] != [r.path for r in first.splits["val"]]
    difficult = [r for s in first.splits.values() for r in s if r.path.stem == "im0"][0]
    assert difficult.ignore.tolist() == [True]


def test_yolo_layout_with_names_in_data_yaml(tmp_path):
    (tmp_path / "data.yaml").write_text("names: {0: person, 1: car}\ntrain: images/train\nval: images/val\n")
    write_image(tmp_path / "images" / "train" / "a.jpg", size=(100, 50))
    write_image(tmp_path / "images" / "val" / "b.jpg", size=(100, 50))
    (tmp_path / "labels" / "train").mkdir(parents=True)
    (tmp_path / "labels" / "train" / "a.txt").write_text("1 0.5 0.5 0.2 0.4\n0 0.1 0.1 0.2 0.2\n")
    loaded = load_dataset(dataset_cfg("dataset=yolo", f"dataset.root={tmp_path}"))
    assert loaded.class_names == ["person", "car"]
    (a,), (b,) = loaded.splits["train"], loaded.splits["val"]
    assert a.labels.tolist() == [2, 1]
    assert np.allclose(a.boxes[0], [40, 15, 60, 35])
    assert b.num_boxes == 0                                # no label file: a negative image


def test_shapes_generation_is_deterministic(tmp_path):
    first = ensure_shapes(tmp_path / "one", num_images=30, image_size=96, seed=3)
    second = ensure_shapes(tmp_path / "two", num_images=30, image_size=96, seed=3)
    for split in ("train", "val"):
        assert first[split][0].read_bytes() == second[split][0].read_bytes()
    for image in sorted((tmp_path / "one" / "images").iterdir()):
        assert image.read_bytes() == (tmp_path / "two" / "images" / image.name).read_bytes()
    data = json.loads(first["train"][0].read_text())
    assert [c["name"] for c in data["categories"]] == ["circle", "square", "triangle"]
    other = ensure_shapes(tmp_path / "three", num_images=30, image_size=96, seed=4)
    assert other["train"][0].read_bytes() != first["train"][0].read_bytes()


def voc_devkit(root: Path, stems: dict[str, list[str]], label: str) -> Path:
    """A VOCdevkit year folder: one image + XML per stem, ImageSets/Main/<split>.txt per split."""
    (root / "ImageSets" / "Main").mkdir(parents=True)
    for split, names in stems.items():
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{s}\n" for s in names))
        for stem in names:
            write_image(root / "JPEGImages" / f"{stem}.jpg")
            voc_xml(root / "Annotations" / f"{stem}.xml", f"{stem}.jpg", [(label, (1, 1, 20, 20), False)])
    return root


def test_voc_07_plus_12_reads_several_devkit_roots(tmp_path):
    voc07 = voc_devkit(tmp_path / "VOC2007", {"trainval": ["07a", "07b"], "test": ["07t"]}, "cat")
    voc12 = voc_devkit(tmp_path / "VOC2012", {"trainval": ["12a"], "test": []}, "dog")
    cfg = dataset_cfg("dataset=voc", f"dataset.root=[{voc07},{voc12}]", "dataset.val_split=test")
    loaded = load_dataset(cfg)
    assert loaded.class_names == ["cat", "dog"]               # from the data, sorted
    assert [r.path.stem for r in loaded.splits["train"]] == ["07a", "07b", "12a"]
    assert [r.path.stem for r in loaded.splits["val"]] == ["07t"]
    assert per_class(loaded, "train") == {"cat": 2, "dog": 1}


def test_yolo_roboflow_export_with_a_list_of_names(tmp_path):
    # Roboflow writes paths relative to a parent folder and the split folders as <split>/images
    (tmp_path / "data.yaml").write_text("train: ../train/images\nval: ../valid/images\nnc: 2\nnames: [red, blue]\n")
    write_image(tmp_path / "train" / "images" / "a.jpg", size=(100, 50))
    write_image(tmp_path / "valid" / "images" / "b.jpg", size=(100, 50))
    (tmp_path / "train" / "labels").mkdir(parents=True)
    (tmp_path / "train" / "labels" / "a.txt").write_text("0 0.5 0.5 1.0 1.0\n")
    loaded = load_dataset(dataset_cfg("dataset=yolo", f"dataset.root={tmp_path}"))
    assert loaded.class_names == ["red", "blue"]
    (a,), (b,) = loaded.splits["train"], loaded.splits["val"]
    assert a.boxes.tolist() == [[0, 0, 100, 50]] and a.labels.tolist() == [1]
    assert b.path.name == "b.jpg" and b.num_boxes == 0


def test_empty_images_are_negatives_unless_keep_empty_is_false(tmp_path):
    for i in range(3):
        write_image(tmp_path / "images" / f"im{i}.png")
        voc_xml(tmp_path / "xml" / f"im{i}.xml", f"im{i}.png", [("dog", (1, 1, 20, 20), False)] if i else [])
    args = ["dataset=voc", f"dataset.images={tmp_path}/images", f"dataset.annotations={tmp_path}/xml",
            "dataset.val_fraction=0"]
    assert len(load_dataset(dataset_cfg(*args)).splits["train"]) == 3
    dropped = load_dataset(dataset_cfg(*args, "dataset.keep_empty=false"))
    assert [r.path.stem for r in dropped.splits["train"]] == ["im1", "im2"]
    assert [Path(p.file).name for p in dropped.problems.by_kind()["empty_image_dropped"]] == ["im0.png"]


def test_shapes_format_generates_once_and_reads_through_the_coco_reader(tmp_path):
    args = ["dataset=shapes", f"dataset.root={tmp_path}/shapes", "dataset.num_images=20", "dataset.image_size=64"]
    loaded = load_dataset(dataset_cfg(*args))
    assert loaded.class_names == ["circle", "square", "triangle"] and loaded.category_ids == [1, 2, 3]
    assert (len(loaded.splits["train"]), len(loaded.splits["val"])) == (17, 3)
    assert len(loaded.problems) == 0
    for record in loaded.splits["train"]:
        assert (record.width, record.height) == (64, 64)
        assert ((record.boxes[:, 2:] - record.boxes[:, :2]) >= 8).all()   # 24 px at 192 scaled to 64
    stamp = tmp_path / "shapes" / "params.json"
    first_mtime = stamp.stat().st_mtime_ns
    load_dataset(dataset_cfg(*args))                             # same parameters: reused as it is
    assert stamp.stat().st_mtime_ns == first_mtime
    bigger = load_dataset(dataset_cfg(*args[:-2], "dataset.num_images=40", "dataset.image_size=64"))
    assert len(bigger.splits["train"]) + len(bigger.splits["val"]) == 40    # other parameters: regenerated
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]     # no temp folder left behind


def test_shapes_generation_is_fast_enough_for_2000_images_in_20_s(tmp_path):
    import time

    start = time.perf_counter()
    ensure_shapes(tmp_path / "s", num_images=200, image_size=192, seed=0)
    # 2000 images in 20 s is 10 ms each; 200 get twice that budget for a busy shared CPU.
    assert time.perf_counter() - start < 4.0
