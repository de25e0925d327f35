"""Recall of planted label errors in the top 20 and top 50 of `rcnn data check --weights` (docs/label-issues.md).

For each seed: the BCCD val split (87 pictures) is copied, PER_KIND boxes are deleted, PER_KIND relabelled and
PER_KIND shifted (tests/helpers/label_noise.py, the planting the tests use), the copy is checked through the
Python API (`rcnn_cli.api.label_issues`, what `rcnn data check --weights W dataset.root=COPY` runs), and the
planted errors among the first 20 and 50 issues are counted, next to the same list shuffled (chance).

Run: .venv/bin/python measurements/planted_label_errors.py CHECKPOINT [--per-kind 10] [--seeds 0,1,2,3,4]
     [--classes RBC,WBC,Platelets] [--images 87]
"""

import argparse
import sys
import tempfile
from collections import Counter
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from helpers import BCCD  # noqa: E402
from helpers.label_noise import copy_bccd, found_in_top, plant_errors, shuffled  # noqa: E402

from rcnn_cli.api import label_issues  # noqa: E402
from rcnn_cli.hardware import cpu_model_of_this_machine  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("weights")
    parser.add_argument("--per-kind", type=int, default=10)
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--classes", default="RBC,WBC,Platelets")
    parser.add_argument("--images", type=int, default=None)
    args = parser.parse_args()
    print(f"{cpu_model_of_this_machine()}; {args.weights}; {args.per_kind} per kind on {args.classes}")
    totals: Counter = Counter()
    for seed in map(int, args.seeds.split(",")):
        with tempfile.TemporaryDirectory() as work:
            root = Path(work) / "BCCD"
            copy_bccd(BCCD, root, "val", args.images)
            planted = plant_errors(root, args.per_kind, seed, tuple(args.classes.split(",")))
            issues = [asdict(i) for i in label_issues(args.weights, [f"dataset.root={root}"], out=Path(work) / "out")]
        row = {}
        for top in (20, 50):
            found = found_in_top(planted, issues, top)
            chance = found_in_top(planted, shuffled(issues, seed), top)
            by_kind = Counter(p.kind for p in found)
            row[top] = f"{len(found)}/{len(planted)} ({dict(by_kind)}; shuffled {len(chance)})"
            totals[f"found{top}"] += len(found)
            totals[f"chance{top}"] += len(chance)
        totals["planted"] += len(planted)
        kinds = Counter(i["kind"] for i in issues[:20])
        print(f"seed {seed}: {len(issues)} issues; top 20 {row[20]}; top 50 {row[50]}; kinds in the top 20: "
              f"{dict(kinds)}", flush=True)
    for top in (20, 50):
        print(f"top {top}: {totals[f'found{top}']} of {totals['planted']} planted errors "
              f"({totals[f'found{top}'] / totals['planted']:.0%}); shuffled: {totals[f'chance{top}']}")


if __name__ == "__main__":
    main()
