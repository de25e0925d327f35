"""Rich tables printed at the end of ``rcnn train`` and ``rcnn eval``."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

console = Console()

SHOWN = ("val/map", "val/map_50", "val/voc07_map50", "val/loss", "train/loss_epoch")


def print_train_summary(results: list, multirun: bool) -> None:
    """results: [(overrides, TrainResult)]; one row per run."""
    table = Table(title="training runs" if multirun else "training finished", title_justify="left")
    if multirun:
        table.add_column("overrides")
    for name in SHOWN:
        table.add_column(name.split("/", 1)[1], justify="right")
    table.add_column("run folder")
    best = max(results, key=lambda item: item[1].metrics.get("val/map", -1.0))
    for overrides, result in results:
        row = [" ".join(overrides)] if multirun else []
        row += [f"{result.metrics[n]:.4f}" if n in result.metrics else "-" for n in SHOWN]
        row.append(str(result.run_dir))
        table.add_row(*row, style="bold green" if multirun and result is best[1] else None)
    console.print(table)
    last = results[-1][1]
    console.print(f"checkpoints: {last.run_dir / 'checkpoints'} (best.ckpt, last.ckpt); "
                  f"plot: {last.run_dir / 'metrics.png'}; logs: metrics.csv, tensorboard/", highlight=False)


EVAL_ROWS = (("map", "AP @[.5:.95] (COCO)"), ("map_50", "AP50"), ("map_75", "AP75"), ("map_small", "AP small"),
             ("map_medium", "AP medium"), ("map_large", "AP large"), ("mar_100", "AR@100"),
             ("voc07_map50", "VOC07 AP50 (11-point)"), ("voc_map50", "VOC AP50 (all points)"))


def print_eval_report(result) -> None:
    summary = result.report.summary()
    console.print(result.report.table())
    table = Table(title=f"{result.num_images} images", title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, title in EVAL_ROWS:
        table.add_row(title, "n/a" if summary[key] < 0 else f"{summary[key]:.4f}")
    console.print(table)
    console.print(f"plots, metrics.json and thresholds.json in {result.out_dir}", highlight=False)
