"""Likely label errors for ``rcnn eval --label-issues`` (the evaluated images, from eval's own
detections) and ``rcnn data check --weights W`` (every image of the configured splits, detected
here): ranked by eval/label_issues.py, written as label_issues.json and .csv, and drawn in
report.html."""

from __future__ import annotations

from pathlib import Path

from rich.markup import escape
from rich.table import Table

from ..errors import UsageError
from ..eval.label_issues import LabelIssue, gallery_html, rank_label_issues, write_label_issues, write_label_report
from . import say, stdout

SHOWN = 10              # issues printed in the terminal (all of them are in the files)


def from_detections(predictions: list[dict], targets: list[dict], class_names: list[str], image_paths: list,
                    out_dir: Path, source: str, page_title: str | None = None) -> tuple[list[LabelIssue], str]:
    """Ranks, writes the JSON and CSV (and with ``page_title`` a report.html of the gallery alone),
    prints the first few; returns the issues and the gallery section for eval's report.html."""
    issues = rank_label_issues(predictions, targets, class_names, image_paths)
    try:
        written = list(write_label_issues(out_dir, issues, source))
        if page_title:
            written.append(write_label_report(out_dir / "report.html", issues, page_title))
    except OSError as err:
        raise UsageError(f"{out_dir}: cannot write the label issues there ({err.strerror or err})") from None
    print_issues(issues, len(image_paths))
    stdout.print(f"{len(issues)} likely label errors: {', '.join(map(str, written))}", markup=False,
                 highlight=False)
    return issues, gallery_html(issues)


def print_issues(issues: list[LabelIssue], images: int) -> None:
    table = Table(title=f"likeliest label errors in {images} images (the worst {min(SHOWN, len(issues))} "
                        f"of {len(issues)})", title_justify="left")
    for column in ("#", "kind", "rank", "image", "box", "label", "model says"):
        table.add_column(column, justify="right" if column in ("#", "rank") else "left")
    for place, item in enumerate(issues[:SHOWN], start=1):
        said = item.suggestion.get("label", "")
        table.add_row(str(place), item.kind, f"{item.rank:.3f}", escape(Path(item.image).name),
                      " ".join(f"{v:.0f}" for v in item.box), escape(item.label),
                      escape(f"{said} {item.score:.2f}" if said else f"{item.score:.2f}"))
    stdout.print(table)


def check_labels(settings, loaded, out_dir: Path, progress) -> list[LabelIssue]:
    """``rcnn data check --weights``: detects every image of ``loaded``'s splits with the checkpoint of
    ``settings`` (as ``rcnn eval`` scores: the exact model unless model.precision is typed), then ranks."""
    import torch

    from ..data.images import ImageReadError
    from ..data.pipeline.dataset import DetectionDataset
    from ..inference.predictor import load_predictor

    cfg = settings.cfg
    predictor = load_predictor(cfg, settings.checkpoint, typed=settings.typed)
    if list(predictor.class_names) != list(loaded.class_names):
        raise UsageError(f"{cfg.model.weights} detects the classes {predictor.class_names} but the data has "
                         f"{loaded.class_names}; pass the matching dataset=... or dataset.class_names=")
    # each picture once, however many splits list it (leakage is data check's own finding)
    records = list({str(record.path): record for split in loaded.splits.values() for record in split}.values())
    dataset = DetectionDataset(records, max_pixels=cfg.dataset.max_image_pixels)
    predictions, targets, paths, batch = [], [], [], []

    def detect() -> None:
        for detection in predictor.detect([image for image, _ in batch]):
            predictions.append({key: value.cpu() for key, value in detection.items()})
        targets.extend(target for _, target in batch)
        batch.clear()

    with torch.inference_mode():
        for index in progress(range(len(dataset)), len(dataset), "detecting"):
            try:
                batch.append(dataset[index])
            except ImageReadError:
                continue            # reported with the data's problems above
            paths.append(records[index].path)
            if len(batch) == int(cfg.dataset.batch_size):
                detect()
        if batch:
            detect()
    if not paths:
        say("note: no image could be read: no label issues to rank")
        return []
    source = f"{cfg.model.weights} on {cfg.dataset.name} ({', '.join(loaded.splits)})"
    return from_detections(predictions, targets, loaded.class_names, paths, out_dir, source,
                           page_title=f"rcnn data check: likely label errors, {source}")[0]
