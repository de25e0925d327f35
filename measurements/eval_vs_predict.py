"""Do `rcnn eval` and `rcnn predict` give each picture the same detections? Compares eval's COCO results file
(`--predictions`) with predict's `predictions.json`, picture by picture: the same number of detections, the
same classes, scores within 1e-5 and boxes within 0.02 px (both files round to 0.01 px and 1e-5).

Run (fp32 both, predict's --conf at the model's box_score_thresh so that it keeps what eval scores):
    rcnn eval --weights W --predictions eval.json
    rcnn predict VAL_IMAGES --weights W --precision fp32 --conf 0.05 --no-draw --out pred --batch-size 1
    .venv/bin/python measurements/eval_vs_predict.py eval.json pred/predictions.json VAL_ANNOTATIONS.json
"""

import argparse
import json
from pathlib import Path

BOX_TOLERANCE, SCORE_TOLERANCE = 0.021, 1.1e-5


def eval_detections(path: Path, annotations: dict) -> dict[str, list[tuple]]:
    """{file name: sorted [(class index 1..C, score, x1, y1, x2, y2)]} from a COCO results file."""
    names = {image["id"]: image["file_name"] for image in annotations["images"]}
    classes = {category: index for index, category in
               enumerate(sorted(c["id"] for c in annotations["categories"]), start=1)}
    found: dict[str, list[tuple]] = {}
    for d in json.loads(path.read_text()):
        x, y, w, h = d["bbox"]
        found.setdefault(names[d["image_id"]], []).append((classes[d["category_id"]], d["score"], x, y, x + w, y + h))
    return {name: sorted(found.get(name, [])) for name in names.values()}


def predict_detections(path: Path) -> dict[str, list[tuple]]:
    return {Path(r["image"]).name: sorted((d["label_id"], d["score"], *d["box"]) for d in r["detections"])
            for r in json.loads(path.read_text())}


def same(a: list[tuple], b: list[tuple]) -> bool:
    return len(a) == len(b) and all(
        p[0] == q[0] and abs(p[1] - q[1]) <= SCORE_TOLERANCE
        and max(abs(u - v) for u, v in zip(p[2:], q[2:])) <= BOX_TOLERANCE for p, q in zip(a, b))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("eval_results", type=Path)
    parser.add_argument("predictions", type=Path)
    parser.add_argument("annotations", type=Path, help="the COCO file of the evaluated split")
    args = parser.parse_args()
    evaluated = eval_detections(args.eval_results, json.loads(args.annotations.read_text()))
    predicted = predict_detections(args.predictions)
    missing = sorted(set(evaluated) - set(predicted))
    if missing:
        raise SystemExit(f"{len(missing)} evaluated pictures have no prediction, e.g. {missing[0]}")
    differ = [name for name in evaluated if not same(evaluated[name], predicted[name])]
    counts = sum(len(evaluated[name]) != len(predicted[name]) for name in differ)
    print(f"{len(evaluated)} pictures; eval {sum(map(len, evaluated.values()))} detections, predict "
          f"{sum(len(predicted[name]) for name in evaluated)}; {len(differ)} pictures differ "
          f"({counts} in their number of detections)")


if __name__ == "__main__":
    main()
