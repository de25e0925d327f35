"""``rcnn data check``: what is in the data and everything wrong with it, before training."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf
from rich.console import Console
from rich.table import Table

from .duplicates import find_duplicates
from .errors import DatasetError
from .load import load_dataset
from .records import ImageRecord, LoadedDataset

EXAMPLES = 5
# COCO's size classes by box area in pixels.
SMALL, MEDIUM = 32 ** 2, 96 ** 2


def run_check(cfg, json_path: Path | None = None, show: int = 0, out: Path = Path("runs/data-check")) -> int:
    """Print the report (and write it as JSON); 0 usable, 1 strict with problems, 2 unusable."""
    console = Console()
    dataset_cfg = OmegaConf.merge(cfg.dataset, {"strict": False})
    try:
        loaded = load_dataset(dataset_cfg, ("train", "val", "test"))
    except DatasetError as err:
        Console(stderr=True).print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
        return 2
    report = build_report(loaded)
    print_report(console, report)
    if json_path:
        write_json(json_path, report)
        console.print(f"report written to {json_path}", highlight=False)
    if show:
        written = draw_samples(loaded, show, out, cfg.dataset.get("max_image_pixels"))
        console.print(f"{len(written)} pictures with boxes in {out}", highlight=False)
    if cfg.dataset.get("strict") and report["problems"]:
        return 1
    return 0


def build_report(loaded: LoadedDataset) -> dict[str, Any]:
    records = [r for split in loaded.splits.values() for r in split]
    classes = Counter(int(label) for r in records for label in r.labels)
    areas = np.concatenate([(r.boxes[:, 2] - r.boxes[:, 0]) * (r.boxes[:, 3] - r.boxes[:, 1]) for r in records]
                           or [np.zeros(0)])
    widths, heights = [r.width for r in records], [r.height for r in records]
    problems = [{"kind": kind, "count": len(items), "policy": loaded.problems.policies.get(kind, ""),
                 "examples": [f"{p.file}: {p.detail}" if p.detail else p.file for p in items[:EXAMPLES]]}
                for kind, items in loaded.problems.by_kind().items()]
    duplicates = find_duplicates({split: [r.path for r in recs] for split, recs in loaded.splits.items()})
    return {
        "images": len(records),
        "boxes": int(sum(r.num_boxes for r in records)),
        "classes": {name: classes.get(i + 1, 0) for i, name in enumerate(loaded.class_names)},
        "splits": {split: split_summary(recs, loaded.class_names) for split, recs in loaded.splits.items()},
        "empty_images": sum(1 for r in records if r.num_boxes == 0),
        "image_size": {"min": [min(widths, default=0), min(heights, default=0)],
                       "max": [max(widths, default=0), max(heights, default=0)]},
        "box_sizes": {"small": int((areas < SMALL).sum()), "medium": int(((areas >= SMALL) & (areas < MEDIUM)).sum()),
                      "large": int((areas >= MEDIUM).sum())},
        "problems": problems,
        "duplicates": [d for d in duplicates if "/" not in d["splits"]],
        "leakage": [d for d in duplicates if "/" in d["splits"]],
        "notes": loaded.notes,
    }


def split_summary(records: list[ImageRecord], class_names: list[str]) -> dict[str, Any]:
    counts = Counter(int(label) for r in records for label in r.labels)
    return {"images": len(records), "boxes": int(sum(r.num_boxes for r in records)),
            "empty_images": sum(1 for r in records if r.num_boxes == 0),
            "classes": {name: counts.get(i + 1, 0) for i, name in enumerate(class_names)}}


def print_report(console: Console, report: dict[str, Any]) -> None:
    splits = report["splits"]
    table = Table(title=f"{report['images']} images, {report['boxes']} boxes", title_justify="left")
    table.add_column("class")
    for split in splits:
        table.add_column(split, justify="right")
    table.add_column("all", justify="right")
    for name, total in report["classes"].items():
        table.add_row(name, *[str(splits[s]["classes"][name]) for s in splits], str(total))
    table.add_row("[dim]images[/]", *[str(splits[s]["images"]) for s in splits], str(report["images"]))
    table.add_row("[dim]empty images[/]", *[str(splits[s]["empty_images"]) for s in splits], str(report["empty_images"]))
    console.print(table)
    sizes, boxes = report["image_size"], report["box_sizes"]
    console.print(f"image sizes {sizes['min'][0]}x{sizes['min'][1]} to {sizes['max'][0]}x{sizes['max'][1]}; "
                  f"boxes small (<32²) {boxes['small']}, medium {boxes['medium']}, large (≥96²) {boxes['large']}",
                  highlight=False)
    if report["problems"]:
        problems = Table(title="problems found (and what was done)", title_justify="left")
        for column in ("problem", "count", "policy", "first files"):
            problems.add_column(column, overflow="fold")
        for p in report["problems"]:
            problems.add_row(p["kind"], str(p["count"]), p["policy"], "\n".join(p["examples"][:3]))
        console.print(problems)
    else:
        console.print("[green]no problems found[/]")
    for key, title in (("duplicates", "pair(s) of duplicate images within a split"),
                       ("leakage", "pair(s) of duplicate images across splits (leakage)")):
        if report[key]:
            console.print(f"[yellow]{len(report[key])} {title}[/], e.g. "
                          + "; ".join(f"{d['kind']}: {d['a']} = {d['b']}" for d in report[key][:3]), highlight=False)
    for note in report["notes"]:
        console.print(f"note: {note}", highlight=False)


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(json.dumps(data, indent=2))
    os.replace(temp, path)


def draw_samples(loaded: LoadedDataset, count: int, out: Path, max_pixels: int | None = None) -> list[Path]:
    """Up to ``count`` images with boxes (train first) drawn with their class names, as
    ``out/<n>_<split>_<stem>.png`` (numbered: file stems repeat across folders and splits)."""
    from .draw import draw_boxes
    from .images import ImageReadError, read_rgb

    out.mkdir(parents=True, exist_ok=True)
    records = [(split, r) for split in ("train", "val", "test") for r in loaded.splits.get(split, []) if r.num_boxes]
    written: list[Path] = []
    for split, record in records:
        if len(written) == count:
            break
        try:
            image = read_rgb(record.path, max_pixels)
        except ImageReadError:      # already in the problems table; draw the next one instead
            continue
        names = [loaded.class_names[int(label) - 1] for label in record.labels]
        path = out / f"{len(written) + 1:03d}_{split}_{record.path.stem}.png"
        temp = path.with_name(f".{path.name}.tmp")
        draw_boxes(image, record.boxes, names, record.labels).save(temp, format="PNG")
        os.replace(temp, path)
        written.append(path)
    return written
