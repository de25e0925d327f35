"""Prediction files: JSON, CSV, COCO results, VOC XML and YOLO txt, each written atomically."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from ..files import write_text


def json_text(results: list[dict[str, Any]]) -> str:
    """[{"image", "output_name", "width", "height", "detections": [{"label", "label_id", "score", "box"}]}];
    ``output_name``: the drawn picture is ``<output_name>.jpg``, the VOC file ``voc/<output_name>.xml``."""
    return json.dumps(results, indent=1)


def csv_text(results: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["image", "width", "height", "label", "label_id", "score", "x1", "y1", "x2", "y2"])
    for result in results:
        for d in result["detections"]:
            writer.writerow([result["image"], result["width"], result["height"], d["label"], d["label_id"],
                             d["score"], *d["box"]])
    return buffer.getvalue()


def coco_text(results: list[dict[str, Any]], category_ids: list[int] | None) -> str:
    """A COCO results file, as pycocotools' ``COCO.loadRes`` and COCO evaluation servers read it: a list
    of {"image_id", "category_id", "bbox": [x, y, width, height], "score"}. Category ids are the
    dataset's own when the checkpoint knows them (else the model's labels 1..C); image ids are
    positions in this run counted from 1, and ``coco_images_text`` maps them to the inputs."""
    detections = []
    for image_id, result in enumerate(results, start=1):
        for d in result["detections"]:
            x1, y1, x2, y2 = d["box"]
            category = category_ids[d["label_id"] - 1] if category_ids else d["label_id"]
            detections.append({"image_id": image_id, "category_id": int(category),
                               "bbox": [x1, y1, round(x2 - x1, 2), round(y2 - y1, 2)], "score": d["score"]})
    return json.dumps(detections, indent=1)


def coco_images_text(results: list[dict[str, Any]]) -> str:
    """The image ids of ``coco_text`` -> inputs, as COCO's "images" list: [{"id", "file_name" (the
    input as the other formats name it: its path, or "<video>#frame<index>"), "width", "height"}].
    It is ready to be the "images" of a ground-truth file to score the results against."""
    return json.dumps([{"id": image_id, "file_name": r["image"], "width": r["width"], "height": r["height"]}
                       for image_id, r in enumerate(results, start=1)], indent=1)


def voc_xml_text(result: dict[str, Any]) -> str:
    """Pascal VOC XML for one image, so predictions can be corrected in a labelling tool."""
    objects = "".join(
        f"  <object>\n    <name>{escape(d['label'])}</name>\n    <pose>Unspecified</pose>\n"
        f"    <truncated>0</truncated>\n    <difficult>0</difficult>\n    <score>{d['score']}</score>\n"
        f"    <bndbox><xmin>{round(d['box'][0])}</xmin><ymin>{round(d['box'][1])}</ymin>"
        f"<xmax>{round(d['box'][2])}</xmax><ymax>{round(d['box'][3])}</ymax></bndbox>\n  </object>\n"
        for d in result["detections"])
    return (f"<annotation>\n  <filename>{escape(Path(result['image']).name)}</filename>\n"
            f"  <size><width>{result['width']}</width><height>{result['height']}</height><depth>3</depth></size>\n"
            f"{objects}</annotation>\n")


def yolo_label_text(result: dict[str, Any]) -> str:
    """YOLO txt for one image: ``class cx cy w h`` normalised to the image size, class = label id - 1."""
    width, height = float(result["width"]), float(result["height"])
    lines = []
    for d in result["detections"]:
        x1, y1, x2, y2 = d["box"]
        lines.append(f"{d['label_id'] - 1} {(x1 + x2) / 2 / width:.6f} {(y1 + y2) / 2 / height:.6f} "
                     f"{(x2 - x1) / width:.6f} {(y2 - y1) / height:.6f}")
    return "\n".join(lines) + ("\n" if lines else "")


def write_yolo(results: list[dict[str, Any]], root: Path, class_names: list[str]) -> None:
    """An Ultralytics/Roboflow-style YOLO folder that labelling tools import and ``rcnn train dataset=yolo
    dataset.root=<root>`` trains on: ``data.yaml`` (names), ``labels/train/<output_name>.txt`` and
    ``images/train/<output_name><ext>``, a hard link to the input (a copy where links are impossible).
    Video frames get their label file; their pixels are not written (use ``--every`` and the drawn frames,
    or extract the frames first)."""
    import os
    import shutil

    import yaml

    write_text(root / "data.yaml", yaml.safe_dump({"names": list(class_names), "train": "images/train",
                                                   "nc": len(class_names)}, sort_keys=False))
    for result in results:
        write_text(root / "labels" / "train" / f"{result['output_name']}.txt", yolo_label_text(result))
        source = Path(result["image"])
        if "#frame" in result["image"] or not source.is_file():
            continue
        target = root / "images" / "train" / f"{result['output_name']}{source.suffix.lower()}"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)


def write_outputs(results: list[dict[str, Any]], out: Path, formats: list[str],
                  category_ids: list[int] | None, class_names: list[str] | None = None) -> list[Path]:
    """results: as ``runner.run`` makes them. VOC files are named by each result's ``output_name``,
    unique within a run (see sources.OutputNames)."""
    written = []
    for fmt in formats:
        if fmt == "json":
            write_text(out / "predictions.json", json_text(results))
            written.append(out / "predictions.json")
        elif fmt == "csv":
            write_text(out / "predictions.csv", csv_text(results))
            written.append(out / "predictions.csv")
        elif fmt == "coco":
            write_text(out / "predictions_coco.json", coco_text(results, category_ids))
            write_text(out / "predictions_coco_images.json", coco_images_text(results))
            written += [out / "predictions_coco.json", out / "predictions_coco_images.json"]
        elif fmt == "voc":
            for result in results:
                write_text(out / "voc" / f"{result['output_name']}.xml", voc_xml_text(result))
            written.append(out / "voc")
        elif fmt == "yolo":
            write_yolo(results, out / "yolo", class_names or [])
            written.append(out / "yolo")
    return written
