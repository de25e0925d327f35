"""Fuzzing the readers with mutated copies of the real BCCD XML and facemask JSON: every case
ends in a recorded problem or one DatasetError line, never a traceback or a hang, and the valid
files around the broken one still load."""

from __future__ import annotations

import json
import random
import shutil
import struct
import zlib

import pytest
from helpers import BCCD, FACEMASK, require_shared
from PIL import Image

from rcnn_cli.data.errors import DatasetError
from rcnn_cli.data.readers.load import load_dataset
from rcnn_cli.settings.resolve import load_config

XML_CASES = 120
JSON_CASES = 80


def mutate_text(text: str, rng: random.Random) -> str | bytes:
    kind = rng.randrange(8)
    if kind == 0:                                   # truncated anywhere
        return text[: rng.randrange(len(text))]
    if kind == 1:                                   # a number replaced by junk
        for token in ("<xmin>", "<ymax>", "<width>", "<difficult>"):
            if token in text and rng.random() < 0.7:
                value = rng.choice(["nan", "-inf", "1e308", "-5", "abc", "", "99999999999999999999", "3.5.1"])
                start = text.index(token) + len(token)
                text = text[:start] + value + text[text.index("<", start):]
        return text
    if kind == 2:                                   # a required element removed
        for tag in ("bndbox", "name", "filename", "size"):
            if f"<{tag}>" in text and rng.random() < 0.5:
                text = text.replace(f"<{tag}>", "<x>", 1).replace(f"</{tag}>", "</x>", 1)
        return text
    if kind == 3:                                   # unknown encoding declared / raw bytes
        return ("<?xml version='1.0' encoding='klingon'?>" + text) if rng.random() < 0.5 else text.encode("utf-16")
    if kind == 4:                                   # random byte flips
        data = bytearray(text.encode())
        for _ in range(rng.randrange(1, 20)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data)
    if kind == 5:                                   # path escape attempts
        return text.replace("<filename>", "<filename>../../../../etc/", 1)
    if kind == 6:
        return ""                                   # empty file
    return text.replace("</annotation>", "<object><name>RBC</name><bndbox><xmin>1e400</xmin><ymin>-1</ymin>"
                                         "<xmax>2</xmax><ymax>2</ymax></bndbox></object></annotation>")


def huge_png_header(path) -> None:
    """A valid PNG header claiming 20000x20000 pixels, with no real image data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0))
                     + chunk(b"IEND", b""))


def test_mutated_voc_never_crashes_and_the_rest_loads(tmp_path):
    require_shared()
    rng = random.Random(0)
    images, annotations = tmp_path / "images", tmp_path / "xml"
    images.mkdir()
    annotations.mkdir()
    sources = sorted((BCCD / "Annotations").glob("*.xml"))[:XML_CASES]
    for i, source in enumerate(sources):
        stem = f"case{i:03d}"
        shutil.copy(BCCD / "JPEGImages" / f"{source.stem}.jpg", images / f"{stem}.jpg")
        text = source.read_text().replace(source.stem, stem)
        mutated = mutate_text(text, rng) if i % 4 else text   # every 4th file stays valid
        (annotations / f"{stem}.xml").write_bytes(mutated if isinstance(mutated, bytes) else mutated.encode())
    (images / "case000.jpg").write_bytes(b"")                              # 0-byte image
    Image.new("RGB", (1, 1)).save(images / "case004.jpg")                  # 1x1 image
    huge_png_header(images / "case008.jpg")                               # decompression bomb header
    cfg = load_config(["dataset=voc", f"dataset.images={images}", f"dataset.annotations={annotations}",
                       "dataset.val_fraction=0"]).dataset
    loaded = load_dataset(cfg, ("train",))
    valid = {f"case{i:03d}" for i in range(len(sources)) if i % 4 == 0} - {"case000", "case004", "case008"}
    assert valid <= {r.path.stem for r in loaded.splits["train"]}
    assert len(loaded.problems) > XML_CASES // 4
    assert all(r.boxes.shape[1] == 4 and (r.boxes[:, 2:] > r.boxes[:, :2]).all() for r in loaded.splits["train"])


@pytest.mark.parametrize("case", range(JSON_CASES))
def test_mutated_coco_json_is_a_problem_or_one_line(tmp_path, case):
    require_shared()
    rng = random.Random(case)
    data = json.loads((FACEMASK / "annotations" / "custom_val.json").read_text())
    data["images"] = data["images"][:5]
    kept = {image["id"] for image in data["images"]}
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] in kept]
    mutation = case % 8
    if mutation == 0:
        rng.choice(data["annotations"])["bbox"] = rng.choice([None, "1,2,3,4", [1, 2], [float("nan")] * 4, [1e308] * 4])
    elif mutation == 1:
        rng.choice(data["images"]).pop(rng.choice(["id", "file_name", "width"]))
    elif mutation == 2:
        rng.choice(data["annotations"])["category_id"] = rng.choice([None, 999, "1", -1])
    elif mutation == 3:
        data[rng.choice(["images", "annotations", "categories"])] = rng.choice([None, {}, "x", 5])
    elif mutation == 4:
        rng.choice(data["images"])["file_name"] = rng.choice(["/etc/passwd", "../../x.jpg", "", None, 7])
    elif mutation == 5:
        rng.choice(data["annotations"])["image_id"] = rng.choice([None, "0", 10 ** 30])
    elif mutation == 6:
        data["images"].append(dict(data["images"][0]))            # duplicate id
    text = json.dumps(data)
    if mutation == 7:
        text = text[: rng.randrange(len(text))]                    # truncated
    (tmp_path / "a.json").write_text(text)
    cfg = load_config(["dataset=coco", f"dataset.val_json={tmp_path}/a.json",
                       f"dataset.val_images={FACEMASK}/val2017"]).dataset
    try:
        loaded = load_dataset(cfg, ("val",))
    except DatasetError as err:
        assert "\n" not in str(err) and "a.json" in str(err) or "no usable images" in str(err)
        return
    assert len(loaded.splits["val"]) >= 3      # one mutation touches at most two images
