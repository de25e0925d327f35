"""metrics.png: training loss per logged step (raw and smoothed) and validation metrics per epoch on
one step axis, read from Lightning's CSVLogger file (issue 19, "curves that say something")."""

from __future__ import annotations

import csv
from pathlib import Path

from PIL import Image

from rcnn_cli.training.callbacks import plot_metrics_csv, read_metric_series, smoothed

COLUMNS = ["epoch", "step", "train/loss_step", "train/loss_epoch", "val/loss", "val/map", "val/map_50"]


def lightning_csv(path: Path, epochs: int, steps_per_epoch: int, log_every: int) -> None:
    """What CSVLogger writes: a row per logged training step, then the epoch's validation and epoch rows."""
    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, COLUMNS)
        writer.writeheader()
        step = 0
        for epoch in range(epochs):
            for _ in range(steps_per_epoch):
                step += 1
                if step % log_every == 0:
                    writer.writerow({"epoch": epoch, "step": step - 1, "train/loss_step": 2.0 / step})
            writer.writerow({"epoch": epoch, "step": step - 1, "val/loss": 1.0 / (epoch + 1),
                             "val/map": 0.1 * (epoch + 1), "val/map_50": 0.2 * (epoch + 1)})
            writer.writerow({"epoch": epoch, "step": step - 1, "train/loss_epoch": 1.5 / (epoch + 1)})


def test_a_one_epoch_run_shows_its_loss_curve_and_its_validation(tmp_path):
    lightning_csv(tmp_path / "metrics.csv", epochs=1, steps_per_epoch=200, log_every=20)
    series = read_metric_series(tmp_path / "metrics.csv")
    assert len(series["train/loss_step"][0]) == 10                  # every logged step, not one dot per epoch
    assert series["val/map"] == ([199], [0.1]) and series["epoch_ends"] == ([199], [1.0])
    plot_metrics_csv(tmp_path / "metrics.csv", tmp_path / "metrics.png")
    assert Image.open(tmp_path / "metrics.png").size[0] >= 800


def test_a_long_run_puts_validation_at_each_epochs_last_step(tmp_path):
    lightning_csv(tmp_path / "metrics.csv", epochs=50, steps_per_epoch=30, log_every=10)
    series = read_metric_series(tmp_path / "metrics.csv")
    assert len(series["train/loss_step"][0]) == 150 and len(series["val/loss"][0]) == 50
    assert series["val/loss"][0][:2] == [29, 59] and series["epoch_ends"][1][-1] == 50.0
    plot_metrics_csv(tmp_path / "metrics.csv", tmp_path / "metrics.png")
    assert (tmp_path / "metrics.png").stat().st_size > 10_000


def test_smoothing_starts_at_the_first_value_and_follows_a_step():
    assert smoothed([4.0]) == [4.0]
    values = smoothed([1.0] * 5 + [0.0] * 30)
    assert abs(values[4] - 1.0) < 1e-9 and values[-1] < 0.01
    assert all(a >= b - 1e-12 for a, b in zip(values, values[1:]))
