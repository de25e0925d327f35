"""Recall of planted label errors in the top 20 and top 50 of `rcnn data check --weights` (docs/label-issues.md).

For each seed: a shared set's val split is copied (BCCD: its 87 pictures' XML and JPEGs; face-mask: its
171 pictures' COCO JSON, the pictures read in place), PER_KIND boxes are deleted, PER_KIND relabelled and
PER_KIND shifted (tests/helpers/label_noise.py, the planting the tests use), the copy is checked through the
Python API (`rcnn_cli.api.label_issues`, what `rcnn data check --weights W OVERRIDES` runs), and the planted
errors among the first 20 and 50 issues are counted, next to the same list shuffled (chance). The top 20's
other issues are compared with the original labels: an issue on a box no original label overlaps at IoU
0.1 is one the data's own labels lack (a missing face or cell), to be looked at in report.html (--keep).

Run: .venv/bin/python measurements/planted_label_errors.py CHECKPOINT [--dataset bccd|facemask] [--per-kind 10]
     [--seeds 0,1,2,3,4] [--classes RBC,WBC,Platelets] [--images 87] [--keep DIR]
"""

import argparse
import json
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from helpers import BCCD, FACEMASK  # noqa: E402
from helpers.label_noise import (  # noqa: E402
    coco_xyxy,
    copy_bccd,
    found_in_top,
    iou,
    plant_coco_errors,
    plant_errors,
    shuffled,
    voc_box,
)

from rcnn_cli.api import label_issues  # noqa: E402
from rcnn_cli.hardware import cpu_model_of_this_machine  # noqa: E402

FACEMASK_VAL = FACEMASK / "annotations" / "custom_val.json"


def corrupt(dataset: str, work: Path, args, seed: int, classes) -> tuple[list, list[str]]:
    """Plants the errors in a copy under ``work`` -> (planted errors, the overrides that check the copy)."""
    if dataset == "bccd":
        root = work / "BCCD"
        copy_bccd(BCCD, root, "val", args.images)
        return plant_errors(root, args.per_kind, seed, *([classes] if classes else [])), [f"dataset.root={root}"]
    copy = work / "val.json"
    planted = plant_coco_errors(FACEMASK_VAL, copy, args.per_kind, seed, classes)
    images = FACEMASK / "val2017"          # only read; every split names the copy, so each picture is checked once
    return planted, [f"dataset.train_json={copy}", f"dataset.train_images={images}",
                     f"dataset.val_json={copy}", f"dataset.val_images={images}"]


def original_boxes(dataset: str) -> dict[str, list[list[float]]]:
    """Every box the unmodified val labels hold, by picture file name."""
    if dataset == "bccd":
        boxes = {}
        for stem in (BCCD / "ImageSets" / "Main" / "val.txt").read_text().split():
            root = ET.parse(BCCD / "Annotations" / f"{stem}.xml").getroot()
            boxes[root.find("filename").text] = [voc_box(o) for o in root.iter("object")]
        return boxes
    data = json.loads(FACEMASK_VAL.read_text())
    names = {image["id"]: image["file_name"] for image in data["images"]}
    boxes = {name: [] for name in names.values()}
    for annotation in data["annotations"]:
        boxes[names[annotation["image_id"]]].append(coco_xyxy(annotation["bbox"]))
    return boxes


def unlabelled_in_top(issues: list[dict], planted: list, original: dict, top: int = 20) -> Counter:
    """The top's issues that point at no planted error, by kind; ``unlabelled``: those whose box no original
    label overlaps at IoU 0.1 (missing boxes the data itself lacks)."""
    count: Counter = Counter()
    for issue in issues[:top]:
        if found_in_top(planted, [issue], 1):
            continue
        count[issue["kind"]] += 1
        if max((iou(issue["box"], b) for b in original.get(Path(issue["image"]).name, [])), default=0.0) < 0.1:
            count["unlabelled"] += 1
    return count


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("weights")
    parser.add_argument("--dataset", choices=("bccd", "facemask"), default="bccd")
    parser.add_argument("--per-kind", type=int, default=10)
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--classes", default=None, help="comma-separated class names (default: every class)")
    parser.add_argument("--images", type=int, default=None, help="the first N val pictures (bccd only)")
    parser.add_argument("--keep", type=Path, default=None, help="keep each seed's label_issues files in DIR/seed-N")
    args = parser.parse_args()
    if args.images is not None and args.dataset != "bccd":
        parser.error("--images picks the first N BCCD val pictures; face-mask always checks its 171")
    classes = tuple(args.classes.split(",")) if args.classes else None
    print(f"{cpu_model_of_this_machine()}; {args.weights}; {args.dataset}; {args.per_kind} per kind on "
          f"{args.classes or 'every class'}")
    original = original_boxes(args.dataset)
    totals: Counter = Counter()
    for seed in map(int, args.seeds.split(",")):
        with tempfile.TemporaryDirectory() as work:
            planted, overrides = corrupt(args.dataset, Path(work), args, seed, classes)
            out = args.keep / f"seed-{seed}" if args.keep else Path(work) / "out"
            issues = [asdict(i) for i in label_issues(args.weights, overrides, out=out)]
        row = {}
        for top in (20, 50):
            found = found_in_top(planted, issues, top)
            chance = found_in_top(planted, shuffled(issues, seed), top)
            by_kind = Counter(p.kind for p in found)
            row[top] = f"{len(found)}/{len(planted)} ({dict(by_kind)}; shuffled {len(chance)})"
            totals[f"found{top}"] += len(found)
            totals[f"chance{top}"] += len(chance)
            for kind, n in by_kind.items():
                totals[f"{kind}{top}"] += n
        totals["planted"] += len(planted)
        kinds = Counter(i["kind"] for i in issues[:20])
        print(f"seed {seed}: {len(issues)} issues; top 20 {row[20]}; top 50 {row[50]}; kinds in the top 20: "
              f"{dict(kinds)}; not planted in the top 20: {dict(unlabelled_in_top(issues, planted, original))}",
              flush=True)
    for top in (20, 50):
        by_kind = {k: totals[f"{k}{top}"] for k in ("deleted", "relabelled", "shifted")}
        print(f"top {top}: {totals[f'found{top}']} of {totals['planted']} planted errors "
              f"({totals[f'found{top}'] / totals['planted']:.0%}; {by_kind}); shuffled: {totals[f'chance{top}']}")


if __name__ == "__main__":
    main()
