"""Issue 17 (scale), item 2: loading opens no image. COCO and VOC trust the declared image sizes, YOLO keeps
its boxes as fractions until the image is read; the first read and `rcnn data check` catch a size that is
wrong."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_data_formats import voc_xml

from rcnn_cli.data.images import ImageReadError
from rcnn_cli.data.inspection.check import build_report
from rcnn_cli.data.pipeline.dataset import DetectionDataset
from rcnn_cli.data.pipeline.sampler import GroupedBatchSampler, landscape_flags
from rcnn_cli.data.readers import coco
from rcnn_cli.data.readers.load import load_dataset
from rcnn_cli.settings.resolve import load_config


def picture(path: Path, size: tuple[int, int], seed: int, orientation: int = 1) -> None:
    """Random 8 x 8 blocks scaled to ``size`` (stored pixels), with an EXIF orientation tag."""
    blocks = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(blocks).resize(size, Image.NEAREST).save(path, exif=exif, quality=95)


def coco_set(tmp_path: Path, declared: dict[str, tuple[int, int]]) -> object:
    """A COCO file declaring ``declared`` sizes, one 10..30 px box per image; its dataset config."""
    images = [{"id": i + 1, "file_name": name, "width": w, "height": h} for i, (name, (w, h)) in
              enumerate(declared.items())]
    boxes = [{"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [10, 10, 20, 20], "iscrowd": 0}
             for i in range(len(images))]
    (tmp_path / "train.json").write_text(json.dumps({"images": images, "annotations": boxes,
                                                     "categories": [{"id": 1, "name": "thing"}]}))
    return load_config(["dataset=coco", f"dataset.train_json={tmp_path}/train.json",
                        f"dataset.train_images={tmp_path}", "dataset.val_fraction=0"]).dataset


@pytest.fixture
def opened(monkeypatch) -> list[str]:
    """Every image file PIL opens (the header reader and the decoder both go through Image.open)."""
    calls: list[str] = []
    original = Image.open

    def counting(path, *args, **kwargs):
        calls.append(str(path))
        return original(path, *args, **kwargs)

    monkeypatch.setattr(Image, "open", counting)
    return calls


def test_coco_load_with_declared_sizes_opens_no_image(tmp_path, opened):
    for i in range(20):
        picture(tmp_path / f"{i}.jpg", (64, 48), i)
    declared = {f"{i}.jpg": (64, 48) for i in range(20)}
    declared["wrong.jpg"] = (64, 64)                     # the file is 64 x 48
    picture(tmp_path / "wrong.jpg", (64, 48), 99)
    opened.clear()
    loaded = load_dataset(coco_set(tmp_path, declared), ("train",))
    assert opened == []
    assert [(r.width, r.height) for r in loaded.splits["train"]] == [(64, 48)] * 20 + [(64, 64)]
    assert len(loaded.problems) == 0
    # The first read finds the wrong size and names the file ...
    dataset = DetectionDataset(loaded.splits["train"])
    assert dataset[0][0].shape == (3, 48, 64)
    with pytest.raises(ImageReadError, match=r"wrong.jpg: .*declares a wrong size \(64x48, expected 64x64"):
        dataset[20]
    # ... and `rcnn data check` (which reads every header) reports it.
    report = build_report(loaded)
    (problem,) = report["problems"]
    assert (problem["kind"], problem["count"]) == ("wrong_declared_size", 1)
    assert problem["examples"] == [f"{tmp_path / 'wrong.jpg'}: annotation says 64x64, the image is 64x48"]


def test_coco_without_declared_sizes_still_reads_headers(tmp_path, opened):
    picture(tmp_path / "a.jpg", (64, 48), 0)
    cfg = coco_set(tmp_path, {"a.jpg": (64, 48)})
    data = json.loads(Path(cfg.train_json).read_text())
    del data["images"][0]["width"]
    Path(cfg.train_json).write_text(json.dumps(data))
    opened.clear()
    (record,) = load_dataset(cfg, ("train",)).splits["train"]
    assert (record.width, record.height) == (64, 48) and len(opened) == 1


def test_coco_declaring_the_stored_size_of_an_exif_photo_gets_its_boxes_turned(tmp_path):
    # Stored 64 x 48, orientation 6 (shown turned clockwise, 48 x 64); the COCO file declares the
    # stored size and a box on the stored pixels, as a tool that ignores EXIF writes them.
    picture(tmp_path / "photo.jpg", (64, 48), 0, orientation=6)
    loaded = load_dataset(coco_set(tmp_path, {"photo.jpg": (64, 48)}), ("train",))
    image, target = DetectionDataset(loaded.splits["train"])[0]
    assert image.shape == (3, 64, 48)
    # orientation 6 shows stored (x, y) at (48 - y, x): box [10, 10, 30, 30] -> [18, 10, 38, 30]
    assert target["boxes"].tolist() == [[18.0, 10.0, 38.0, 30.0]]
    (problem,) = build_report(loaded)["problems"]
    assert problem["kind"] == "unrotated_annotation"


def test_coco_fast_path_gives_what_checking_each_image_gives(tmp_path, monkeypatch):
    # Clean images take numpy's fast path, the others are checked one by one; forcing every image
    # through the check must change nothing: records, problems and their order.
    names = [f"{i}.jpg" for i in range(8)]
    for i, name in enumerate(names):
        picture(tmp_path / name, (64, 48), i)
    cfg = coco_set(tmp_path, {name: (64, 48) for name in names})
    data = json.loads(Path(cfg.train_json).read_text())
    data["annotations"] += [
        {"id": 20, "image_id": 2, "category_id": 1, "bbox": [-5, 10, 20, 20]},           # clipped
        {"id": 21, "image_id": 2, "category_id": 7, "bbox": [1, 1, 5, 5]},               # unknown category
        {"id": 22, "image_id": 4, "category_id": 1, "bbox": [1, 1, 0, 5]},               # no area
        {"id": 23, "image_id": 4, "category_id": 1, "bbox": [1, "2", 3, 4]},             # not a number
        {"id": 24, "image_id": 5, "category_id": 1, "bbox": [float("nan"), 1, 3, 4]},
        {"id": 25, "image_id": 99, "category_id": 1, "bbox": [1, 1, 3, 4]},              # unknown image
        {"id": 26, "image_id": 1, "category_id": 1, "bbox": [30, 20, 4, 4], "iscrowd": 1},
    ]
    data["images"][6]["file_name"] = "missing.jpg"
    data["images"][7]["width"] = 0                                                       # header read
    Path(cfg.train_json).write_text(json.dumps(data))

    def loaded_as_lists():
        loaded = load_dataset(cfg, ("train",))
        return ([(str(r.path), r.width, r.height, r.boxes.tolist(), r.labels.tolist(), r.ignore.tolist(), r.source_id)
                 for r in loaded.splits["train"]], [(p.kind, p.file, p.detail) for p in loaded.problems.problems])

    fast = loaded_as_lists()
    monkeypatch.setattr(coco, "_regular_files", lambda folder: set())
    assert loaded_as_lists() == fast
    assert len(fast[0]) == 7 and {kind for kind, _, _ in fast[1]} == {
        "box_outside_image", "unknown_label", "zero_size_box", "bad_annotation", "non_finite_box", "missing_image"}


def voc_set(tmp_path: Path, declared: dict[str, tuple[int, int] | None]) -> object:
    """Flat VOC folders, one 64 x 48 picture per name, its XML declaring ``declared[name]`` (None:
    no <size>) and one box; their dataset config."""
    for i, (name, size) in enumerate(declared.items()):
        picture(tmp_path / "images" / name, (64, 48), i)
        xml = voc_xml(tmp_path / "xml" / f"{Path(name).stem}.xml", name, [("cell", (10, 10, 30, 30), False)],
                      size=size or (0, 0))
        if size is None:
            xml.write_text(xml.read_text().replace("<size><width>0</width><height>0</height></size>", ""))
    return load_config(["dataset=voc", f"dataset.images={tmp_path}/images", f"dataset.annotations={tmp_path}/xml",
                        "dataset.val_fraction=0"]).dataset


def test_voc_load_with_declared_sizes_opens_no_image(tmp_path, opened):
    declared = {f"{i}.jpg": (64, 48) for i in range(5)} | {"wrong.jpg": (64, 64), "nosize.jpg": None}
    cfg = voc_set(tmp_path, declared)
    opened.clear()
    loaded = load_dataset(cfg, ("train",))
    assert opened == [str(tmp_path / "images" / "nosize.jpg")]     # only the XML without a <size>
    sizes = {r.path.name: (r.width, r.height) for r in loaded.splits["train"]}
    assert sizes == {name: size or (64, 48) for name, size in declared.items()} and len(loaded.problems) == 0
    dataset = DetectionDataset(loaded.splits["train"])
    wrong = [r.path.name for r in loaded.splits["train"]].index("wrong.jpg")
    with pytest.raises(ImageReadError, match=r"wrong.jpg: .*declares a wrong size \(64x48, expected 64x64"):
        dataset[wrong]
    (problem,) = build_report(loaded)["problems"]
    assert (problem["kind"], problem["count"]) == ("wrong_declared_size", 1)


def yolo_set(tmp_path: Path, names: list[str], size: tuple[int, int] = (100, 50)) -> object:
    (tmp_path / "data.yaml").write_text("names: [person, car]\ntrain: images/train\n")
    (tmp_path / "labels" / "train").mkdir(parents=True)
    for i, name in enumerate(names):
        picture(tmp_path / "images" / "train" / name, size, i)
        (tmp_path / "labels" / "train" / f"{Path(name).stem}.txt").write_text("1 0.5 0.5 0.2 0.4\n0 0.9 0.5 0.4 0.2\n")
    return load_config(["dataset=yolo", f"dataset.root={tmp_path}", "dataset.val_fraction=0"]).dataset


def test_yolo_load_opens_no_image_and_the_first_read_gives_pixels(tmp_path, opened):
    cfg = yolo_set(tmp_path, ["a.jpg", "b.jpg"])
    opened.clear()
    loaded = load_dataset(cfg, ("train",))
    assert opened == []
    a, b = loaded.splits["train"]
    assert not a.size_known and a.labels.tolist() == [2, 1]
    # boxes leaving the image were clipped at load, in fractions of it (0.9 + 0.4 / 2 > 1)
    assert [p.kind for p in loaded.problems.problems] == ["box_outside_image"] * 2
    image, target = DetectionDataset(loaded.splits["train"])[0]
    assert image.shape == (3, 50, 100)
    assert target["boxes"].tolist() == [[40.0, 15.0, 60.0, 35.0], [70.0, 20.0, 100.0, 30.0]]
    assert landscape_flags([a, b]) == [True, None]         # the sampler reads no header either
    assert (b.width, b.height) == (100, 50) and b.size_known   # anything else that asks reads the header


def test_data_check_reads_yolo_sizes_and_drops_unreadable_images(tmp_path, opened):
    cfg = yolo_set(tmp_path, ["a.jpg", "b.jpg"], size=(40, 80))
    (tmp_path / "images" / "train" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    opened.clear()
    loaded = load_dataset(cfg, ("train",))
    assert opened == [] and len(loaded.splits["train"]) == 3
    with pytest.raises(ImageReadError, match="broken.jpg"):
        DetectionDataset(loaded.splits["train"])[2]
    report = build_report(loaded)
    assert [r.path.name for r in loaded.splits["train"]] == ["a.jpg", "b.jpg"]
    assert report["images"] == 2 and report["image_size"] == {"min": [40, 80], "max": [40, 80]}
    assert [p["kind"] for p in report["problems"]] == ["box_outside_image", "unreadable_image"]
    assert loaded.splits["train"][0].boxes.tolist() == [[16.0, 24.0, 24.0, 56.0], [28.0, 32.0, 40.0, 48.0]]


def test_grouped_batches_keep_images_of_unknown_orientation_apart():
    landscape = [True, None, False] * 7
    for seed in range(3):
        batches = list(GroupedBatchSampler(landscape, 3, shuffle=True, seed=seed))
        assert sorted(i for batch in batches for i in batch) == list(range(21))
        assert all(len({landscape[i] for i in batch}) == 1 for batch in batches)
