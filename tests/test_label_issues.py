"""Likely label errors: each kind on hand-worked boxes, the files and the gallery, and the planted
errors of a corrupted copy of BCCD found near the top of the list by a model trained here."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict

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


def test_boxes_of_a_class_the_model_never_finds_are_not_flagged():
    """No detection backs either box, but the model found none of the class anywhere (recall 0): its
    silence says nothing about these labels."""
    nothing = {"boxes": torch.zeros((0, 4)), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)}
    truth = {"boxes": torch.tensor([[0.0, 0, 10, 10], [20, 0, 30, 10]]), "labels": torch.tensor([1, 2])}
    assert rank_label_issues([nothing], [truth], NAMES, ["a.jpg"]) == []


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


# -- the planting itself, in a COCO file (the face-mask measurement's corruption) -----------------------------------

CATEGORY_IDS = {"mask_weared_incorrect": 0, "with_mask": 1, "without_mask": 2}     # ids from 0, as face-mask's
HAND_COCO = {
    "categories": [{"id": cid, "name": name} for name, cid in CATEGORY_IDS.items()],
    "images": [{"id": 10, "file_name": "a.jpg", "width": 100, "height": 80},      # boxes far enough from the
               {"id": 11, "file_name": "b.jpg", "width": 150, "height": 150},     # edges that no shift is cut
               {"id": 12, "file_name": "c.jpg", "width": 200, "height": 200},
               {"id": 13, "file_name": "d.jpg", "width": 50, "height": 50}],
    "annotations": [{"id": 1, "image_id": 10, "category_id": 1, "bbox": [40, 30, 20, 20], "iscrowd": 0},
                    {"id": 2, "image_id": 10, "category_id": 2, "bbox": [40, 30, 30, 30], "iscrowd": 1},
                    {"id": 3, "image_id": 11, "category_id": 2, "bbox": [50, 40, 30, 30], "iscrowd": 0},
                    {"id": 4, "image_id": 12, "category_id": 0, "bbox": [60, 60, 40, 40], "iscrowd": 0},
                    {"id": 5, "image_id": 12, "category_id": 1, "bbox": [5, 5, 0, 10], "iscrowd": 0},   # 0 wide
                    {"id": 6, "image_id": 13, "category_id": 1, "bbox": [0, 0, 10, 10], "iscrowd": 1}],
}


def _after_planting(planted) -> list[dict]:
    """HAND_COCO's annotations as the planted records say they now are, worked out here: each record must
    name exactly one usable (not crowd, not zero-size) box of its picture, by its box and class."""
    files = {image["id"]: image for image in HAND_COCO["images"]}
    names = {cid: name for name, cid in CATEGORY_IDS.items()}
    kept, used = [], []
    for annotation in HAND_COCO["annotations"]:
        image, (x, y, w, h) = files[annotation["image_id"]], annotation["bbox"]
        errors = [p for p in planted if p.image == image["file_name"] and p.true_box == [x, y, x + w, y + h]
                  and p.label == names[annotation["category_id"]]]
        if not errors:
            kept.append(annotation)
            continue
        (error,) = errors
        assert not annotation["iscrowd"] and w > 0 and h > 0
        used.append(error)
        if error.kind == "relabelled":
            assert error.new_label != error.label and error.labelled_box == error.true_box
            kept.append({**annotation, "category_id": CATEGORY_IDS[error.new_label]})
        elif error.kind == "shifted":
            x0, y0, x1, y1 = error.labelled_box
            assert (x1, y1) == (x0 + w, y0 + h) and 0 <= x0 <= x1 <= image["width"] and 0 <= y0 <= y1 <= image["height"]
            overlap = max(0, min(x1, x + w) - max(x0, x)) * max(0, min(y1, y + h) - max(y0, y))
            assert overlap <= 0.4 * w * 0.4 * h + 1e-6                     # moved 60% or more each way
            kept.append({**annotation, "bbox": [x0, y0, w, h]})
        else:
            assert error.kind == "deleted" and error.labelled_box is None
    assert len(used) == len(planted)
    return kept


def test_coco_planting_changes_exactly_the_boxes_it_records(tmp_path):
    """Three pictures with one usable box each, so one error of each kind lands on each (at most one a
    picture); the crowd and zero-size boxes and the crowd-only picture are never chosen."""
    from helpers.label_noise import plant_coco_errors

    source = tmp_path / "instances.json"
    source.write_text(json.dumps(HAND_COCO))
    before = source.read_bytes()
    for seed in range(4):
        dest = tmp_path / f"corrupted-{seed}.json"
        planted = plant_coco_errors(source, dest, per_kind=1, seed=seed)
        assert source.read_bytes() == before                                # the input is never written
        assert sorted(p.kind for p in planted) == ["deleted", "relabelled", "shifted"]
        assert sorted(p.image for p in planted) == ["a.jpg", "b.jpg", "c.jpg"]
        written = json.loads(dest.read_text())
        assert written == {**HAND_COCO, "annotations": _after_planting(planted)}


# -- planted errors in a copy of BCCD, found by a model trained here ---------------------------------------------

TOP, FOUND_AT_LEAST = 20, 6
# A model trained for this module: the tiny experiment's narrow resnet18_fpn on BCCD's train split at 192 px,
# 3 short epochs (25 batches of 4), ~85 s of one core; AP50 0.47 on 20 val pictures. Checking 40 val pictures
# with 3 WBC boxes deleted, 3 relabelled and 3 shifted (plant_errors seeds 0-5), it put 7, 8, 8, 8, 8 and 9 of
# the 9 in its top 20; the same lists shuffled put 0-3 there (measured in the session that wrote this test,
# AMD EPYC, 2 cores).
LABEL_MODEL = ["dataset=bccd", "model.min_size=192", "model.max_size=256", "trainer.max_epochs=3",
               "trainer.limit_train_batches=25", "trainer.limit_val_batches=2", "optim.lr=0.003"]


@pytest.fixture(scope="module")
def bccd_model(tmp_path_factory):
    from helpers import BCCD, TINY_TRAIN, require_shared

    from rcnn_cli.commands import train

    require_shared()
    run_dir = tmp_path_factory.mktemp("label-model") / "run"
    train.run(train.TrainOptions([*TINY_TRAIN, *LABEL_MODEL, f"dataset.root={BCCD}", f"run_dir={run_dir}"]))
    return run_dir / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def corrupted(tmp_path_factory):
    """The first 40 BCCD val pictures, copied, with 9 WBC label errors planted (seed 0)."""
    from helpers import BCCD
    from helpers.label_noise import copy_bccd, plant_errors

    root = tmp_path_factory.mktemp("corrupted") / "BCCD"
    copy_bccd(BCCD, root, "val", 40)
    return root, plant_errors(root, per_kind=3, seed=0, classes=("WBC",))


def test_planted_label_errors_come_first_and_not_by_chance(bccd_model, corrupted, tmp_path):
    from helpers.label_noise import found_in_top, shuffled

    from rcnn_cli.api import label_issues

    root, planted = corrupted
    issues = label_issues(bccd_model, [f"dataset.root={root}"], out=tmp_path / "out")
    written = json.loads((tmp_path / "out" / "label_issues.json").read_text())
    assert [i["kind"] for i in written["issues"]] == [i.kind for i in issues]
    assert len({i["image"] for i in written["issues"]}) <= 40           # each picture checked once
    found = found_in_top(planted, written["issues"], TOP)
    assert len(found) >= FOUND_AT_LEAST, [(p.kind, p.image) for p in planted if p not in found]
    assert len(found_in_top(planted, shuffled(written["issues"]), TOP)) < FOUND_AT_LEAST    # the bound beats chance
    assert (tmp_path / "out" / "label_issues.csv").read_text().count("\n") == len(issues) + 1
    page = (tmp_path / "out" / "report.html").read_text()
    assert "Likely label errors (20 of" in page and page.count("data:image/jpeg;base64,") == TOP


def test_the_command_line_ranks_as_the_api_does(bccd_model, corrupted, tmp_path):
    from helpers import run_rcnn

    from rcnn_cli.api import label_issues

    root, _ = corrupted
    out = run_rcnn("data", "check", "--weights", str(bccd_model), f"dataset.root={root}", "--out",
                   str(tmp_path / "cli"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "likeliest label errors in 40 images" in out.stdout
    from_cli = json.loads((tmp_path / "cli" / "label_issues.json").read_text())["issues"]
    # one torch thread, as the command's subprocess runs: sums split over two threads round differently in
    # the last float bit (a score of 0.2181 against 0.218 when the suite ran without xdist's one-thread setting)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        from_api = [asdict(i) for i in label_issues(bccd_model, [f"dataset.root={root}"], out=tmp_path / "api")]
    finally:
        torch.set_num_threads(threads)
    assert from_cli == from_api


def test_eval_label_issues_adds_the_gallery_to_its_report(bccd_model, corrupted, tmp_path):
    from helpers.label_noise import found_in_top

    from rcnn_cli.commands import evaluate

    root, planted = corrupted
    evaluate.run(evaluate.EvalOptions(bccd_model, [f"dataset.root={root}", "trainer.accelerator=cpu"],
                                      out=tmp_path / "eval", label_issues=True))
    issues = json.loads((tmp_path / "eval" / "label_issues.json").read_text())["issues"]
    assert len(found_in_top(planted, issues, TOP)) >= FOUND_AT_LEAST
    page = (tmp_path / "eval" / "report.html").read_text()
    assert "Worst images per class" in page and "Likely label errors (20 of" in page
