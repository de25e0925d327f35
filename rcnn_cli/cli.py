"""The ``rcnn`` command: one verb per job, Hydra-style ``key=value`` overrides after it.

Commands import their machinery lazily so that ``rcnn --help`` stays instant.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from .config import ConfigError, load_config

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Train, evaluate, run and export Faster R-CNN detectors.")
data_app = typer.Typer(no_args_is_help=True, help="Inspect datasets.")
config_app = typer.Typer(no_args_is_help=True, help="Show the resolved configuration.")
app.add_typer(data_app, name="data")
app.add_typer(config_app, name="config")

console = Console(stderr=True)
Overrides = Annotated[list[str] | None, typer.Argument(help="key=value config overrides")]
ConfigDir = Annotated[Path | None, typer.Option("--config-dir", help="extra config folder")]


def fail(message: str, code: int = 2) -> None:
    """One line for the user, then exit (2: usage or config error, 1: the job failed)."""
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def compose(overrides: list[str] | None, config_dir: Path | None = None):
    try:
        return load_config(overrides or [], config_dir)
    except ConfigError as err:
        fail(str(err))


@config_app.command("show")
def config_show(overrides: Overrides = None, config_dir: ConfigDir = None) -> None:
    """Print the resolved config (after overrides) as YAML."""
    from omegaconf import OmegaConf

    typer.echo(OmegaConf.to_yaml(compose(overrides, config_dir)))


@data_app.command("check")
def data_check(
    overrides: Overrides = None,
    config_dir: ConfigDir = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="write the report as JSON")] = None,
    show: Annotated[int, typer.Option("--show", help="draw N images with their boxes")] = 0,
    out: Annotated[Path, typer.Option("--out", help="folder for --show pictures")] = Path("runs/data-check"),
) -> None:
    """Load the configured splits and report counts, sizes, duplicates and every problem found."""
    from .data.check import run_check

    raise typer.Exit(run_check(compose(overrides, config_dir), json_path=json_path, show=show, out=out))


def sweep(overrides: list[str]) -> list[list[str]]:
    """Hydra-style sweeps: ``a=1,2 b=x,y`` -> the 4 override lists, in order."""
    from itertools import product

    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as err:  # hydra's parser errors are long; the first line says enough
        fail(f"cannot parse overrides: {str(err).splitlines()[0]}")
    choices = [[f"{o.input_line.split('=')[0]}={v}" for v in o.sweep_string_iterator()]
               if o.is_sweep_override() else [o.input_line] for o in parsed]
    return [list(combo) for combo in product(*choices)]


@app.command()
def train(
    overrides: Overrides = None,
    config_dir: ConfigDir = None,
    multirun: Annotated[bool, typer.Option("--multirun", "-m", help="sweep comma-separated values, one run each")] = False,
) -> None:
    """Train a detector: ``rcnn train dataset=voc model=resnet50_fpn trainer.max_epochs=12``."""
    runs = sweep(overrides or []) if multirun else [overrides or []]
    results = []
    for run_overrides in runs:
        cfg = compose(run_overrides, config_dir)
        if multirun:
            console.rule(" ".join(run_overrides) or "defaults")
        results.append((run_overrides, _train_one(cfg)))
    from .report import print_train_summary

    print_train_summary(results, multirun)


def _train_one(cfg):
    import torch

    from .data.errors import DatasetError
    from .model.weights import WeightsError
    from .training.module import NonFiniteLossError
    from .training.run import train as run_training

    try:
        return run_training(cfg, say=lambda line: console.print(line, highlight=False))
    except (DatasetError, WeightsError) as err:
        fail(str(err))
    except NonFiniteLossError as err:
        fail(str(err), code=1)
    except torch.OutOfMemoryError:
        size = int(cfg.dataset.batch_size)
        fail(f"out of GPU memory with dataset.batch_size={size}; try dataset.batch_size={max(size // 2, 1)} "
             "(and trainer.accumulate_grad_batches=2 to keep the effective batch)", code=1)


@app.command("eval")
def evaluate(
    overrides: Overrides = None,
    config_dir: ConfigDir = None,
    weights: Annotated[Path, typer.Option("--weights", "-w", help="checkpoint to evaluate")] = ...,
    json_path: Annotated[Path | None, typer.Option("--json", help="write the metrics as JSON")] = None,
    predictions: Annotated[Path | None, typer.Option("--predictions", help="write COCO-format results")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="folder for plots and thresholds.json")] = None,
) -> None:
    """Evaluate a checkpoint: COCO mAP, VOC07/VOC AP50, per-class AP, PR curves, thresholds."""
    from .data.errors import DatasetError
    from .model.weights import WeightsError
    from .report import print_eval_report
    from .training.validate import EvalSetupError, evaluate_checkpoint

    cfg = compose(overrides, config_dir)
    if not weights.is_file():
        fail(f"--weights {weights}: no such file")
    out = out or _default_eval_dir(weights)
    overridden = any(o.lstrip("+~").startswith("dataset") for o in overrides or [])
    try:
        result = evaluate_checkpoint(cfg, weights, out, overridden, json_path, predictions)
    except (DatasetError, WeightsError, EvalSetupError) as err:
        fail(str(err))
    if result.report is not None:
        print_eval_report(result)


def _default_eval_dir(weights: Path) -> Path:
    """runs/x/checkpoints/best.ckpt -> runs/x/eval; anything else -> runs/eval-<stem>."""
    if weights.parent.name == "checkpoints":
        return weights.parent.parent / "eval"
    return Path("runs") / f"eval-{weights.stem}"


@app.command()
def predict(
    sources: Annotated[list[str], typer.Argument(help="images, folders, globs, .txt lists or videos")],
    weights: Annotated[Path, typer.Option("--weights", "-w", help="checkpoint, torchvision .pth, .onnx or .torchscript")] = ...,
    out: Annotated[Path | None, typer.Option("--out", help="output folder (default runs/predict, numbered)")] = None,
    fmt: Annotated[list[str], typer.Option("--format", help="json, csv, coco, voc (repeatable)")] = ["json"],  # noqa: B006
    conf: Annotated[str, typer.Option("--conf", help="score threshold, or thresholds.json from rcnn eval")] = "0.25",
    classes: Annotated[str | None, typer.Option("--classes", help="comma-separated class names to keep")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="images per forward pass")] = 4,
    every: Annotated[int, typer.Option("--every", help="videos: use every N-th frame")] = 1,
    no_draw: Annotated[bool, typer.Option("--no-draw", help="do not write annotated pictures")] = False,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:1")] = "cpu",
    precision: Annotated[str | None, typer.Option(
        "--precision", help="auto (folded BN; bf16 where the hardware runs it natively and faster), fp32 "
        "(exact), bf16, or int8 (CPU, calibrated on the first 16 inputs); default: the checkpoint's "
        "model.precision")] = None,
) -> None:
    """Detect objects in images and videos; writes annotated pictures and prediction files."""
    from .predict.cli_run import predict_command

    code = predict_command(sources, weights, out, fmt, conf, classes, batch_size, every, not no_draw, device,
                           console, fail, precision)
    raise typer.Exit(code)


@app.command("export")
def export_cmd(
    overrides: Annotated[list[str] | None, typer.Argument(help="model key=value, e.g. box_score_thresh=0.3")] = None,
    weights: Annotated[Path, typer.Option("--weights", "-w", help="checkpoint or torchvision .pth")] = ...,
    onnx: Annotated[bool, typer.Option("--onnx", help="write ONNX (the default format)")] = False,
    torchscript: Annotated[bool, typer.Option("--torchscript", help="write TorchScript")] = False,
    out: Annotated[Path | None, typer.Option("--out", help="output file (default: beside the weights)")] = None,
    images: Annotated[list[str] | None, typer.Option("--images", help="images for the parity check (repeatable)")] = None,
    input_dtype: Annotated[str, typer.Option("--input-dtype", help="uint8 (0-255) or float32 (0-1) input")] = "uint8",
) -> None:
    """Export the whole detector (resize, RPN, NMS, heads, postprocess) and prove parity with torch."""
    from .export.cli_run import export_command

    suffixes = [s for s, wanted in ((".onnx", onnx or not torchscript), (".torchscript", torchscript)) if wanted]
    raise typer.Exit(export_command(weights, suffixes, out, images, input_dtype, overrides, console, fail))


@app.command("benchmark")
def benchmark_cmd(
    overrides: Overrides = None,
    config_dir: ConfigDir = None,
    images: Annotated[str | None, typer.Option("--images", help="folder or glob (default: the dataset's val split)")] = None,
    count: Annotated[int, typer.Option("--count", help="images to time")] = 4,
    batch: Annotated[int, typer.Option("--batch", help="batch size for throughput and training")] = 4,
    repeats: Annotated[int, typer.Option("--repeats", help="timed repetitions")] = 3,
    warmup: Annotated[int, typer.Option("--warmup", help="untimed warm-up runs")] = 1,
    no_train: Annotated[bool, typer.Option("--no-train", help="skip the training-step timing")] = False,
    scaling: Annotated[bool, typer.Option("--scaling", help="also time sizes 320-1024 x 300-2000 proposals")] = False,
    json_path: Annotated[Path | None, typer.Option("--json", help="write all figures as JSON")] = None,
) -> None:
    """Time our detector and torchvision's with the same weights on the same images, side by side."""
    from .benchmark.cli_run import benchmark_command
    from .data.errors import DatasetError

    cfg = compose(overrides, config_dir)
    try:
        benchmark_command(cfg, images, count, batch, repeats, warmup, not no_train, json_path, console, scaling)
    except (DatasetError, ValueError) as err:
        fail(str(err))


# Lightning's advice aimed at library users, not at people running a finished command.
QUIET = ("was called without a model", "there is no last checkpoint", "exists and is not empty",
         "LeafSpec", "is smaller than the logging interval", "does not have many workers",
         "Checkpoint directory .* exists and is not empty", "The given NumPy array is not writable")


def main() -> None:
    import logging
    import os
    import warnings

    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")   # no network calls at import
    for text in QUIET:
        warnings.filterwarnings("ignore", message=f".*{text}.*")
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(lambda record: "Tip:" not in str(record.msg))   # cloud adverts
    try:
        app()
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
