"""The rows of docs/accuracy.md's tables from the files `rcnn eval --json F [--predictions P]` wrote.

Each argument is LABEL=METRICS.json or LABEL=METRICS.json:PREDICTIONS.json; a row holds AP @[.5:.95], AP50
and, with a predictions file (COCO results), how many detections the evaluated pictures got. The figures
are read, never recomputed, so the table says what `rcnn eval` printed.

Run: .venv/bin/python measurements/accuracy_table.py plain=ev.json tta=ev-tta.json agnostic=ev-agn.json:dets.json
"""

import argparse
import json
from pathlib import Path


def row(label: str, files: str) -> str:
    metrics_file, _, predictions_file = files.partition(":")
    metrics = json.loads(Path(metrics_file).read_text())
    cells = [label, f"{metrics['map']:.3f}", f"{metrics['map_50']:.3f}"]
    count = len(json.loads(Path(predictions_file).read_text())) if predictions_file else None
    cells.append(f"{count} detections" if count is not None else "")
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("rows", nargs="+", help="LABEL=METRICS.json[:PREDICTIONS.json]")
    args = parser.parse_args()
    print("| | AP @[.5:.95] | AP50 | |")
    print("|---|---|---|---|")
    for item in args.rows:
        label, _, files = item.partition("=")
        print(row(label, files))


if __name__ == "__main__":
    main()
