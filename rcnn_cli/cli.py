"""The ``rcnn`` command: declares the options of each verb and hands them, as one options object, to
its module in ``commands/``. Every verb takes Hydra-style ``key=value`` overrides after it; which
settings win is decided in ``settings.resolve``.

Commands are imported lazily so that ``rcnn --help`` stays instant.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from .predict.limits import PREDICT, ServeLimits

SERVE = ServeLimits()      # rcnn serve's defaults, written in predict/limits.py only
app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Train, evaluate, run and export Faster R-CNN detectors.")
data_app = typer.Typer(no_args_is_help=True, help="Inspect datasets.")
config_app = typer.Typer(no_args_is_help=True, help="Show the resolved configuration.")
weights_app = typer.Typer(no_args_is_help=True, help="Pretrained weights: list them, fetch them for offline use.")
app.add_typer(data_app, name="data")
app.add_typer(config_app, name="config")
app.add_typer(weights_app, name="weights")

Overrides = Annotated[list[str] | None, typer.Argument(help="key=value config overrides")]
ConfigDir = Annotated[Path | None, typer.Option("--config-dir", help="extra config folder")]
JsonPath = Annotated[Path | None, typer.Option("--json", help="write the results as JSON")]
Device = Annotated[str | None, typer.Option("--device", help="auto (the GPU when there is one), cpu, cuda, cuda:1; "
                                            "same as device=...")]
Tta = Annotated[bool, typer.Option("--tta", help="test-time augmentation: model.tta_scales x horizontal flip, fused by "
                                   "weighted box fusion (checkpoints only); same as model.tta=true")]
ENSEMBLE_HELP = "; several, fused by weighted box fusion: a.ckpt,b.ckpt or an ensemble.yaml"


@config_app.command("show")
def config_show(overrides: Overrides = None, config_dir: ConfigDir = None,
                weights: Annotated[Path | None, typer.Option("--weights", "-w", help="as eval/predict would load "
                                                             "this checkpoint")] = None) -> None:
    """Print the config a command would run with (checkpoint < presets < your overrides) as YAML."""
    from omegaconf import OmegaConf

    from .settings.resolve import resolve

    settings = resolve("predict" if weights else "config", overrides or [], weights=weights, config_dir=config_dir)
    typer.echo(OmegaConf.to_yaml(settings.cfg))


@weights_app.command("list")
def weights_list() -> None:
    """Every named weights file: its preset, size, published COCO box AP, and whether it is cached."""
    from .commands import weights as command

    command.list_weights()


@weights_app.command("fetch")
def weights_fetch(names: Annotated[list[str], typer.Argument(help="names from `rcnn weights list`, or all")]) -> None:
    """Download into the torch hub cache ($TORCH_HOME), hash-checked; copy that folder to offline machines."""
    from .commands import weights as command

    command.fetch(names)


@data_app.command("check")
def data_check(
    overrides: Overrides = None,
    config_dir: ConfigDir = None,
    json_path: JsonPath = None,
    show: Annotated[int, typer.Option("--show", help="draw N images with their boxes")] = 0,
    out: Annotated[Path, typer.Option("--out", help="folder for --show pictures")] = Path("runs/data-check"),
    augmented: Annotated[bool, typer.Option("--augmented", help="--show draws training images after augmentation "
                                            "and the model's resize, as the model sees them")] = False,
    weights: Annotated[str | None, typer.Option("--weights", "-w", help="rank likely label errors (missing, wrong, "
                                                "spurious, badly placed boxes) with this checkpoint: label_issues.json"
                                                " and .csv and report.html in --out")] = None,
) -> None:
    """Load the configured splits and report counts, sizes, duplicates and every problem found."""
    from .commands import check

    raise typer.Exit(check.run(check.CheckOptions(overrides or [], config_dir, json_path, show, out, augmented,
                                                  weights)))


@app.command()
def train(
    overrides: Overrides = None,
    config_dir: ConfigDir = None,
    multirun: Annotated[bool, typer.Option("--multirun", "-m",
                                           help="sweep comma-separated values, one run each")] = False,
    folds: Annotated[int | None, typer.Option("--folds", help="K-fold cross-validation: K runs under one folder, "
                                              "mean ± std of every metric, ensemble.yaml of the K best checkpoints; "
                                              "same as dataset.folds=K (run it again with run_dir=<folder> to "
                                              "continue)")] = None,
) -> None:
    """Train a detector: ``rcnn train dataset=voc model=resnet50_fpn trainer.max_epochs=12``."""
    from .commands import crossval, train

    crossval.run(train.TrainOptions(overrides or [], config_dir, multirun, folds))


@app.command()
def tune(overrides: Overrides = None, config_dir: ConfigDir = None) -> None:
    """Search hyper-parameters with Optuna: ``rcnn tune dataset=bccd tune.trials=20`` (space in ``tune.space``)."""
    from .commands import tune as command

    command.run(command.TuneOptions(overrides or [], config_dir))


@app.command("eval")
def evaluate(
    overrides: Overrides = None,
    config_dir: ConfigDir = None,
    weights: Annotated[str, typer.Option("--weights", "-w", help="checkpoint (or named weights) to evaluate"
                                         + ENSEMBLE_HELP)] = ...,
    json_path: JsonPath = None,
    predictions: Annotated[Path | None, typer.Option("--predictions", help="write COCO-format results")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="folder for plots and thresholds.json")] = None,
    tile: Annotated[int | None, typer.Option("--tile", help="score huge pictures in overlapping tiles of this "
                                             "many px, as rcnn predict --tile")] = None,
    overlap: Annotated[float, typer.Option("--overlap", help="--tile: overlap of neighbouring tiles")
                       ] = PREDICT.tile_overlap,
    precision: Annotated[str | None, typer.Option(
        "--precision", help="fp32 (default: the exact model, the same figures on every CPU), or auto, bf16, int8 "
        "to score a fast path, printed beside the exact figures; same as model.precision=...")] = None,
    tta: Tta = False,
    label_issues: Annotated[bool, typer.Option("--label-issues", help="also rank the likely label errors of the "
                                               "evaluated images: label_issues.json and .csv, a gallery in "
                                               "report.html")] = False,
) -> None:
    """Evaluate a checkpoint: COCO mAP, VOC07/VOC AP50, per-class AP, PR curves, thresholds, report.html."""
    from .commands import evaluate as command
    from .commands.predict import shorthand

    command.run(command.EvalOptions(weights=weights, overrides=shorthand(overrides or [], precision=precision),
                                    config_dir=config_dir, json_path=json_path, predictions=predictions, out=out,
                                    tile=tile, overlap=overlap, tta=tta, label_issues=label_issues))


@app.command()
def predict(
    sources: Annotated[list[str], typer.Argument(help="images, folders, globs, .txt lists or videos, then "
                                                 "key=value overrides")],
    weights: Annotated[str | None, typer.Option("--weights", "-w", help="checkpoint, torchvision .pth, .onnx, "
                                                ".torchscript, OpenVINO .xml, or a name from `rcnn weights list` "
                                                "(default: mobilenet_v3_large_320_fpn.coco)" + ENSEMBLE_HELP)] = None,
    config_dir: ConfigDir = None,
    out: Annotated[Path | None, typer.Option("--out", help="output folder (default runs/predict, numbered)")] = None,
    fmt: Annotated[list[str], typer.Option("--format", help="json, csv, coco, voc, yolo (repeatable)")] = ["json"],  # noqa: B006
    conf: Annotated[str, typer.Option("--conf", help="score threshold, or thresholds.json from rcnn eval")
                    ] = str(PREDICT.conf),
    classes: Annotated[str | None, typer.Option("--classes", help="comma-separated class names to keep")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="images per forward pass")] = PREDICT.batch_size,
    every: Annotated[int, typer.Option("--every", help="videos: use every N-th frame")] = 1,
    no_draw: Annotated[bool, typer.Option("--no-draw", help="do not write annotated pictures")] = False,
    save_video: Annotated[bool, typer.Option("--save-video", help="videos: write <name>_annotated.mp4 at the "
                                             "source's frame rate (divided by --every)")] = False,
    tile: Annotated[int | None, typer.Option("--tile", help="huge pictures: detect in overlapping tiles of this "
                                             "many px, plus a whole-picture pass, merged")] = None,
    overlap: Annotated[float, typer.Option("--overlap", help="--tile: overlap of neighbouring tiles")
                       ] = PREDICT.tile_overlap,
    device: Device = None,
    precision: Annotated[str | None, typer.Option(
        "--precision", help="auto (folded BN; bf16 where the hardware runs it natively and faster), fp32 "
        "(exact), bf16, or int8 (CPU, calibrated on the first 16 inputs); same as model.precision=...")] = None,
    tta: Tta = False,
) -> None:
    """Detect objects in images and videos; writes annotated pictures and prediction files."""
    from .commands import predict as command

    inputs, overrides = split_overrides(sources)
    raise typer.Exit(command.run(command.PredictOptions(
        sources=inputs, weights=weights, overrides=overrides, config_dir=config_dir, out=out, formats=fmt, conf=conf,
        classes=classes, batch_size=batch_size, every=every, draw=not no_draw, save_video=save_video, tile=tile,
        overlap=overlap, device=device, precision=precision, tta=tta)))


def split_overrides(arguments: list[str]) -> tuple[list[str], list[str]]:
    """Sources apart from ``key=value`` overrides: an argument is an override when the part before
    its first ``=`` is a dotted name (``model.box_score_thresh=0.5``, ``device=cpu``), not a path."""
    import os
    import re

    pattern = re.compile(r"^[+~]?[A-Za-z_][\w]*(\.[\w]+)*=")
    overrides = [a for a in arguments if pattern.match(a) and not os.path.lexists(a)]   # os.path: never raises
    return [a for a in arguments if a not in overrides], overrides


@app.command()
def serve(
    overrides: Overrides = None,
    config_dir: ConfigDir = None,
    weights: Annotated[str | None, typer.Option("--weights", "-w", help="checkpoint, exported file or named "
                                                "weights (default: as rcnn predict)" + ENSEMBLE_HELP)] = None,
    host: Annotated[str, typer.Option("--host", help="address to listen on (127.0.0.1: this machine only)")
                    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port")] = 8000,
    conf: Annotated[float, typer.Option("--conf", help="score threshold of the returned detections")
                    ] = PREDICT.conf,
    max_batch: Annotated[int, typer.Option("--max-batch", help="requests batched into one forward pass")
                         ] = SERVE.max_batch,
    max_wait_ms: Annotated[float, typer.Option("--max-wait-ms", help="how long a request waits for a batch")
                           ] = SERVE.max_wait_ms,
    max_body_mb: Annotated[float, typer.Option("--max-body-mb", help="largest upload accepted")] = SERVE.max_body_mb,
    max_pixels: Annotated[int, typer.Option("--max-pixels", help="largest picture accepted, width x height, read "
                                            "from its header (bounds a request's memory: ~38 bytes a pixel)")
                          ] = SERVE.max_pixels,
    body_timeout: Annotated[float, typer.Option("--body-timeout", help="seconds to receive an upload; a stalled "
                                                "one gets 408")] = SERVE.body_timeout_s,
    tta: Tta = False,
) -> None:
    """Serve the detector over HTTP: POST /predict (image bytes or multipart) -> rcnn predict's JSON."""
    from .commands import serve as command

    limits = ServeLimits(max_body_mb=max_body_mb, max_pixels=max_pixels, max_batch=max_batch, max_wait_ms=max_wait_ms,
                         body_timeout_s=body_timeout)
    command.run(command.ServeOptions(weights=weights, overrides=overrides or [], config_dir=config_dir, host=host,
                                     port=port, conf=conf, limits=limits,
                                     tta=tta))


@app.command("export")
def export_cmd(
    overrides: Overrides = None,
    config_dir: ConfigDir = None,
    weights: Annotated[str | None, typer.Option("--weights", "-w", help="checkpoint, torchvision .pth or a name "
                                                "from `rcnn weights list` (default: as rcnn predict)")] = None,
    onnx: Annotated[bool, typer.Option("--onnx", help="write ONNX (the default format)")] = False,
    torchscript: Annotated[bool, typer.Option("--torchscript", help="write TorchScript")] = False,
    formats: Annotated[list[str] | None, typer.Option("--format", help="onnx, torchscript, openvino (comma-separated "
                                                      "or repeated; with --onnx/--torchscript)")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="output file (default: beside the weights)")] = None,
    images: Annotated[list[str] | None, typer.Option("--images",
                                                     help="images for the parity check (repeatable)")] = None,
    input_dtype: Annotated[str, typer.Option("--input-dtype", help="uint8 (0-255) or float32 (0-1) input")] = "uint8",
    int8: Annotated[bool, typer.Option("--int8", help="also NAME.int8.onnx / NAME.int8.xml: the ONNX graph quantized "
                                       "by onnxruntime, the OpenVINO IR by NNCF, calibrated on --images (default: "
                                       "training images), each kept if mAP50 vs fp32 >= 0.98")] = False,
    half: Annotated[bool, typer.Option("--half", help="also NAME.fp16.torchscript for GPUs (fp16 backbone), traced "
                                       "and checked on the GPU, kept if mAP50 vs fp32 >= 0.98")] = False,
    json_path: Annotated[Path | None, typer.Option("--json", help="write a report: each file written or refused, "
                                                   "with its check's figures")] = None,
) -> None:
    """Export the whole detector (resize, RPN, NMS, heads, postprocess) and prove parity with torch."""
    from .commands import export as command

    chosen = command.suffixes_for(formats or [])
    flags = [s for s, wanted in ((".onnx", onnx), (".torchscript", torchscript)) if wanted]
    suffixes = list(dict.fromkeys(flags + chosen)) or [".onnx"]
    raise typer.Exit(command.run(command.ExportOptions(weights, suffixes, overrides or [], config_dir, out, images,
                                                       input_dtype, int8, half, json_path=json_path)))


@app.command("benchmark")
def benchmark_cmd(
    overrides: Overrides = None,
    config_dir: ConfigDir = None,
    weights: Annotated[Path | None, typer.Option("--weights", "-w", help="time these weights (default: "
                                                 "model.weights, or seeded random ones)")] = None,
    images: Annotated[str | None, typer.Option("--images",
                                               help="folder or glob (default: the dataset's val split)")] = None,
    count: Annotated[int, typer.Option("--count", help="images to time")] = 4,
    batch: Annotated[int, typer.Option("--batch", help="batch size for throughput and training")] = 4,
    repeats: Annotated[int, typer.Option("--repeats", help="timed repetitions")] = 3,
    warmup: Annotated[int, typer.Option("--warmup", help="untimed warm-up runs")] = 1,
    no_train: Annotated[bool, typer.Option("--no-train", help="skip the training-step timing")] = False,
    scaling: Annotated[bool, typer.Option("--scaling", help="also time sizes 320-1024 x 300-2000 proposals")] = False,
    json_path: JsonPath = None,
    data_scale: Annotated[str | None, typer.Option(
        "--data-scale", metavar="N[,N...]", help="instead: time the data side (annotation loading, data check, "
        "COCO eval, DataLoader) on generated COCO sets of N images")] = None,
    load_scale: Annotated[str | None, typer.Option(
        "--load-scale", metavar="N[,N...]", help="instead (or with --data-scale): time annotation loading alone "
        "on generated COCO sets of N images whose files are links to a few pictures (118287: COCO's size)")] = None,
    formats: Annotated[str, typer.Option("--formats", help="also export and time onnx, openvino, torchscript "
                                         "(comma-separated; fp32 and int8 files, OpenVINO bf16 where native, fp16 "
                                         "TorchScript on a GPU); default none")] = "",
    profile: Annotated[bool, typer.Option("--profile", help="instead: ms per image of each inference stage for "
                                          "every torch path, and of a training step, with FLOP rates against "
                                          "this CPU's peak (on the CPU)")] = False,
) -> None:
    """Time our detector and torchvision's with the same weights on the same images, side by side."""
    from .commands import benchmark as command

    command.run(command.BenchmarkOptions(overrides or [], config_dir, weights, images, count, batch, repeats, warmup,
                                         not no_train, scaling, json_path, data_scale, load_scale, formats,
                                         profile=profile))


# Lightning's advice aimed at library users, not at people running a finished command.
QUIET = ("was called without a model", "there is no last checkpoint", "exists and is not empty",
         "LeafSpec", "is smaller than the logging interval", "does not have many workers",
         "Checkpoint directory .* exists and is not empty", "The given NumPy array is not writable")


def main() -> None:
    import logging
    import os
    import warnings

    from .errors import RcnnError, disk_refusal

    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")   # no network calls at import
    for text in QUIET:
        warnings.filterwarnings("ignore", message=f".*{text}.*")
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(lambda record: "Tip:" not in str(record.msg))   # cloud adverts
    try:
        app()
    except RcnnError as err:
        _print_error(str(err))
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        _print_error("interrupted")
        sys.exit(130)
    except ModuleNotFoundError as err:
        from .errors import missing_extra

        if (line := missing_extra(err)) is None:
            raise
        _print_error(line)
        sys.exit(2)
    except Exception as err:
        # a write the disk refused, from wherever it came (Lightning's own files, a library's writer):
        # one line, as the toolkit's own writes (files.py) raise it
        if (refusal := disk_refusal(err)) is None:
            raise
        _print_error(str(refusal))
        sys.exit(refusal.exit_code)


def _print_error(message: str) -> None:
    from rich.text import Text

    from .commands import plain, text_console

    # messages name the user's paths and values: text, not markup, on one line (see commands.plain)
    text_console(stderr=True).print(Text.assemble(("error:", "bold red"), " ", plain(message)), highlight=False,
                                    soft_wrap=True)


if __name__ == "__main__":
    main()
