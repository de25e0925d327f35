"""Small Lightning callbacks of ours: the per-epoch plot of losses and mAP."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import OnExceptionCheckpoint
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only

from ..files import save_figure

PLOTTED = {"losses": ("train/loss_epoch", "val/loss"), "mAP": ("val/map", "val/map_50")}


class PlotMetrics(L.Callback):
    """After every validation, redraws ``metrics.png`` (losses and mAP per epoch) from metrics.csv."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)

    @rank_zero_only
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        for logger in trainer.loggers:
            logger.save()
        plot_metrics_csv(self.run_dir / "metrics.csv", self.run_dir / "metrics.png")


def read_epoch_metrics(csv_path: Path) -> dict[str, dict[int, float]]:
    """metric name -> {epoch: last value logged in that epoch}."""
    series: dict[str, dict[int, float]] = {}
    if not csv_path.exists():
        return series
    with open(csv_path, newline="") as file:
        for row in csv.DictReader(file):
            if not row.get("epoch"):
                continue
            for key, value in row.items():
                if key not in ("epoch", "step") and value not in ("", None):
                    series.setdefault(key, {})[int(float(row["epoch"]))] = float(value)
    return series


def plot_metrics_csv(csv_path: Path, png_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = read_epoch_metrics(csv_path)
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for axis, (title, names) in zip(axes, PLOTTED.items(), strict=True):
        for name in names:
            if name in series:
                epochs = sorted(series[name])
                axis.plot([e + 1 for e in epochs], [series[name][e] for e in epochs], marker="o", label=name)
        axis.set_title(title)
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
        if axis.lines:
            axis.legend(fontsize=8)
    figure.tight_layout()
    save_figure(figure, png_path)
    plt.close(figure)


class SaveOnInterrupt(OnExceptionCheckpoint):
    """Ctrl-C (or a crash) mid-run: save ``interrupted.ckpt`` and tell the user how to go on."""

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        super().on_exception(trainer, pl_module, exception)
        if isinstance(exception, KeyboardInterrupt):
            rank_zero_info(f"interrupted: saved {self.ckpt_path}; continue with resume={self.ckpt_path} "
                           f"(or resume from last.ckpt, the end of the last full epoch)")
