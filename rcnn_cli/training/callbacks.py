"""Small Lightning callbacks of ours: the metrics plot and the checkpoint on Ctrl-C."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import OnExceptionCheckpoint
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only

from ..errors import disk_refusal
from ..files import save_figure

# Left panel: training loss per logged step (raw faint, smoothed bold) and validation loss per
# epoch; right panel: validation mAP per epoch. One x axis (optimizer steps) for both, so a
# one-epoch run shows its whole loss curve and a 50-epoch run reads at a glance.
TRAIN_LOSS, VAL_LOSS, VAL_MAPS = "train/loss_step", "val/loss", ("val/map", "val/map_50")
SMOOTHING = 0.8      # exponential moving average weight, as TensorBoard's slider


class PlotMetrics(L.Callback):
    """After every validation, redraws ``metrics.png`` from metrics.csv."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)

    @rank_zero_only
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        for logger in trainer.loggers:
            logger.save()
        plot_metrics_csv(self.run_dir / "metrics.csv", self.run_dir / "metrics.png")


def read_metric_series(csv_path: Path) -> dict[str, tuple[list[int], list[float]]]:
    """metric name -> (steps, values) in logging order, from Lightning's CSVLogger file; also
    ``"epoch_ends"`` -> (steps where an epoch ended, epoch numbers from 1)."""
    series: dict[str, tuple[list[int], list[float]]] = {}
    if not csv_path.exists():
        return series
    ends: dict[int, int] = {}
    with open(csv_path, newline="") as file:
        for row in csv.DictReader(file):
            if not row.get("step"):
                continue
            step = int(float(row["step"]))
            if row.get("epoch"):
                ends[int(float(row["epoch"])) + 1] = step
            for key, value in row.items():
                if key not in ("epoch", "step") and value not in ("", None):
                    steps, values = series.setdefault(key, ([], []))
                    steps.append(step)
                    values.append(float(value))
    series["epoch_ends"] = ([ends[e] for e in sorted(ends)], [float(e) for e in sorted(ends)])
    return series


def smoothed(values: list[float], weight: float = SMOOTHING) -> list[float]:
    """Exponential moving average with TensorBoard's start-up correction (no bias toward 0)."""
    out, average = [], 0.0
    for count, value in enumerate(values, start=1):
        average = weight * average + (1 - weight) * value
        out.append(average / (1 - weight ** count))
    return out


def plot_metrics_csv(csv_path: Path, png_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = read_metric_series(csv_path)
    figure, (losses, maps) = plt.subplots(1, 2, figsize=(10, 3.4))
    if TRAIN_LOSS in series:
        steps, values = series[TRAIN_LOSS]
        losses.plot(steps, values, color="tab:blue", alpha=0.25, linewidth=1)
        losses.plot(steps, smoothed(values), color="tab:blue", linewidth=2, label="train loss (smoothed)")
    if VAL_LOSS in series:
        losses.plot(*series[VAL_LOSS], color="tab:orange", marker="o", label="val loss")
    for name in VAL_MAPS:
        if name in series:
            maps.plot(*series[name], marker="o", label=name.split("/", 1)[1].replace("map", "mAP"))
    for axis, title in ((losses, "losses"), (maps, "validation mAP")):
        for step in series.get("epoch_ends", ([], []))[0]:
            axis.axvline(step, color="grey", alpha=0.2, linewidth=0.8)
        axis.set_title(title)
        axis.set_xlabel("optimizer step (grey lines: epoch ends)")
        axis.grid(alpha=0.3)
        if axis.lines:
            axis.legend(fontsize=8)
    figure.tight_layout()
    save_figure(figure, png_path)
    plt.close(figure)


class SaveOnInterrupt(OnExceptionCheckpoint):
    """Ctrl-C (or a crash) mid-run: save ``interrupted.ckpt`` and tell the user how to go on. Not after a
    write the disk refused: it would refuse the checkpoint too, and the error would be told twice. A save
    that fails here is raised like any refused write: one line (``cli.main``)."""

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if disk_refusal(exception) is not None:
            return
        super().on_exception(trainer, pl_module, exception)
        if isinstance(exception, KeyboardInterrupt):
            rank_zero_info(f"interrupted: saved {self.ckpt_path}; continue with resume={self.ckpt_path} "
                           f"(or resume from last.ckpt, the end of the last full epoch)")
