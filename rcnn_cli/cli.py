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

from .commands.options import (
    BenchmarkOptions,
    CheckOptions,
    EvalOptions,
    ExportOptions,
    PredictOptions,
    ServeOptions,
    TrainOptions,
    TuneOptions,
    defaults,
)

# Each option's default, read from its command's options dataclass (commands/options.py), the one place it is
# written; light to import, so that --help stays instant.
TRAIN, TUNE, CHECK, EVAL = defaults(TrainOptions), defaults(TuneOptions), defaults(CheckOptions), defaults(EvalOptions)
PREDICT, SERVE, EXPORT = defaults(PredictOptions), defaults(ServeOptions), defaults(ExportOptions)
BENCHMARK = defaults(BenchmarkOptions)

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
    """Print the config a command would run with (checkpoint < presets < your overrides) as YAML; for an
    ensemble, one YAML document per member."""
    from omegaconf import OmegaConf

    from .settings.resolve import resolve

    settings = resolve("predict" if weights else "config", overrides or [], weights=weights, config_dir=config_dir)
    typer.echo("---\n".join(OmegaConf.to_yaml(member.cfg) for member in settings.members or [settings]))


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
    overrides: Overrides = CHECK.overrides,
    config_dir: ConfigDir = CHECK.config_dir,
    json_path: JsonPath = CHECK.json_path,
    show: Annotated[int, typer.Option("--show", help="draw N images with their boxes")] = CHECK.show,
    out: Annotated[Path | None, typer.Option("--out", help="folder for --show pictures and label issues "
                                             "(default runs_root/data-check)")] = CHECK.out,
    augmented: Annotated[bool, typer.Option("--augmented", help="--show draws training images after augmentation "
                                            "and the model's resize, as the model sees them")] = CHECK.augmented,
    weights: Annotated[str | None, typer.Option("--weights", "-w", help="rank likely label errors (missing, wrong, "
                                                "spurious, badly placed boxes) with this checkpoint: label_issues.json"
                                                " and .csv and report.html in --out")] = CHECK.weights,
) -> None:
    """Load the configured splits and report counts, sizes, duplicates and every problem found."""
    from .commands import check

    raise typer.Exit(check.run(CheckOptions(overrides=list(overrides), config_dir=config_dir, json_path=json_path,
                                            show=show, out=out, augmented=augmented, weights=weights)))


@app.command()
def train(
    overrides: Overrides = TRAIN.overrides,
    config_dir: ConfigDir = TRAIN.config_dir,
    multirun: Annotated[bool, typer.Option("--multirun", "-m",
                                           help="sweep comma-separated values, one run each")] = TRAIN.multirun,
    folds: Annotated[int | None, typer.Option("--folds", help="K-fold cross-validation: K runs under one folder, "
                                              "mean ± std of every metric, ensemble.yaml of the K best checkpoints; "
                                              "same as dataset.folds=K (run it again with run_dir=<folder> to "
                                              "continue)")] = TRAIN.folds,
) -> None:
    """Train a detector: rcnn train dataset=voc model=resnet50_fpn trainer.max_epochs=12."""
    from .commands import crossval

    crossval.run(TrainOptions(overrides=list(overrides), config_dir=config_dir, multirun=multirun, folds=folds))


@app.command()
def tune(overrides: Overrides = TUNE.overrides, config_dir: ConfigDir = TUNE.config_dir) -> None:
    """Search hyper-parameters with Optuna: rcnn tune dataset=bccd tune.trials=20 (space in tune.space)."""
    from .commands import tune as command

    command.run(TuneOptions(overrides=list(overrides), config_dir=config_dir))


@app.command("eval")
def evaluate(
    overrides: Overrides = EVAL.overrides,
    config_dir: ConfigDir = EVAL.config_dir,
    weights: Annotated[str, typer.Option("--weights", "-w", help="checkpoint (or named weights) to evaluate"
                                         + ENSEMBLE_HELP)] = ...,
    json_path: JsonPath = EVAL.json_path,
    predictions: Annotated[Path | None, typer.Option("--predictions", help="write COCO-format results")
                           ] = EVAL.predictions,
    out: Annotated[Path | None, typer.Option("--out", help="folder for plots and thresholds.json (default: the "
                                                  "run's eval/ for runs/x/checkpoints/*.ckpt, else "
                                                  "runs_root/eval-<name>)")] = EVAL.out,
    tile: Annotated[int | None, typer.Option("--tile", help="score huge pictures in overlapping tiles of this "
                                             "many px, as rcnn predict --tile")] = EVAL.tile,
    overlap: Annotated[float, typer.Option("--overlap", help="--tile: overlap of neighbouring tiles")
                       ] = EVAL.overlap,
    precision: Annotated[str | None, typer.Option(
        "--precision", help="fp32 (default: the exact model, the same figures on every CPU), or auto, bf16, int8 "
        "to score a fast path, printed beside the exact figures; same as model.precision=...")] = EVAL.precision,
    tta: Tta = EVAL.tta,
    label_issues: Annotated[bool, typer.Option("--label-issues", help="also rank the likely label errors of the "
                                               "evaluated images: label_issues.json and .csv, a gallery in "
                                               "report.html")] = EVAL.label_issues,
) -> None:
    """Evaluate a checkpoint: COCO mAP, VOC07/VOC AP50, per-class AP, PR curves, thresholds, report.html."""
    from .commands import evaluate as command

    command.run(EvalOptions(weights=weights, overrides=list(overrides), config_dir=config_dir, json_path=json_path,
                            predictions=predictions, out=out, tile=tile, overlap=overlap, tta=tta,
                            label_issues=label_issues, precision=precision))


@app.command()
def predict(
    sources: Annotated[list[str], typer.Argument(help="images, folders, globs, .txt lists or videos, then "
                                                 "key=value overrides")],
    weights: Annotated[str | None, typer.Option("--weights", "-w", help="checkpoint, torchvision .pth, .onnx, "
                                                ".torchscript, OpenVINO .xml, or a name from `rcnn weights list` "
                                                "(default: mobilenet_v3_large_320_fpn.coco)" + ENSEMBLE_HELP)
                       ] = PREDICT.weights,
    config_dir: ConfigDir = PREDICT.config_dir,
    out: Annotated[Path | None, typer.Option("--out", help="output folder (default runs_root/predict, numbered)")
                   ] = PREDICT.out,
    fmt: Annotated[list[str], typer.Option("--format", help="json, csv, coco, voc, yolo (repeatable)")
                   ] = PREDICT.formats,
    conf: Annotated[str, typer.Option("--conf", help="score threshold, or thresholds.json from rcnn eval")
                    ] = PREDICT.conf,
    classes: Annotated[str | None, typer.Option("--classes", help="comma-separated class names to keep")
                       ] = PREDICT.classes,
    batch_size: Annotated[int, typer.Option("--batch-size", help="images per forward pass")] = PREDICT.batch_size,
    every: Annotated[int, typer.Option("--every", help="videos: use every N-th frame")] = PREDICT.every,
    no_draw: Annotated[bool, typer.Option("--no-draw", help="do not write annotated pictures")] = not PREDICT.draw,
    save_video: Annotated[bool, typer.Option("--save-video", help="videos: write <name>_annotated.mp4 at the "
                                             "source's frame rate (divided by --every)")] = PREDICT.save_video,
    tile: Annotated[int | None, typer.Option("--tile", help="huge pictures: detect in overlapping tiles of this "
                                             "many px, plus a whole-picture pass, merged")] = PREDICT.tile,
    overlap: Annotated[float, typer.Option("--overlap", help="--tile: overlap of neighbouring tiles")
                       ] = PREDICT.overlap,
    device: Device = PREDICT.device,
    precision: Annotated[str | None, typer.Option(
        "--precision", help="auto (folded BN; bf16 where the hardware runs it natively and faster), fp32 "
        "(exact), bf16, or int8 (CPU, calibrated on the first 16 inputs); same as model.precision=...")
                          ] = PREDICT.precision,
    tta: Tta = PREDICT.tta,
) -> None:
    """Detect objects in images and videos; writes annotated pictures and prediction files."""
    from .commands import predict as command

    inputs, overrides = split_overrides(sources)
    raise typer.Exit(command.run(PredictOptions(
        sources=inputs, weights=weights, overrides=overrides, config_dir=config_dir, out=out, formats=list(fmt),
        conf=conf, classes=classes, batch_size=batch_size, every=every, draw=not no_draw, save_video=save_video,
        tile=tile, overlap=overlap, device=device, precision=precision, tta=tta)))


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
    overrides: Overrides = SERVE.overrides,
    config_dir: ConfigDir = SERVE.config_dir,
    weights: Annotated[str | None, typer.Option("--weights", "-w", help="checkpoint, exported file or named "
                                                "weights (default: as rcnn predict)" + ENSEMBLE_HELP)] = SERVE.weights,
    host: Annotated[str, typer.Option("--host", help="address to listen on (127.0.0.1: this machine only)")
                    ] = SERVE.host,
    port: Annotated[int, typer.Option("--port", help="TCP port")] = SERVE.port,
    conf: Annotated[float, typer.Option("--conf", help="score threshold of the returned detections")
                    ] = SERVE.conf,
    max_batch: Annotated[int, typer.Option("--max-batch", help="requests batched into one forward pass")
                         ] = SERVE.limits.max_batch,
    max_wait_ms: Annotated[float, typer.Option("--max-wait-ms", help="how long a request waits for a batch")
                           ] = SERVE.limits.max_wait_ms,
    max_body_mb: Annotated[float, typer.Option("--max-body-mb", help="largest upload accepted")
                           ] = SERVE.limits.max_body_mb,
    max_pixels: Annotated[int, typer.Option("--max-pixels", help="largest picture accepted, width x height, read "
                                            "from its header (bounds a request's memory: ~38 bytes a pixel)")
                          ] = SERVE.limits.max_pixels,
    body_timeout: Annotated[float, typer.Option("--body-timeout", help="seconds to receive an upload; a stalled "
                                                "one gets 408")] = SERVE.limits.body_timeout_s,
    tta: Tta = SERVE.tta,
) -> None:
    """Serve the detector over HTTP: POST /predict (image bytes or multipart) -> rcnn predict's JSON."""
    from dataclasses import replace

    from .commands import serve as command

    # the limits not on the command line (decode_threads) keep their defaults
    limits = replace(SERVE.limits, max_body_mb=max_body_mb, max_pixels=max_pixels, max_batch=max_batch,
                     max_wait_ms=max_wait_ms, body_timeout_s=body_timeout)
    command.run(ServeOptions(weights=weights, overrides=list(overrides), config_dir=config_dir, host=host, port=port,
                             conf=conf, limits=limits, tta=tta))


@app.command("export")
def export_cmd(
    overrides: Overrides = EXPORT.overrides,
    config_dir: ConfigDir = EXPORT.config_dir,
    weights: Annotated[str | None, typer.Option("--weights", "-w", help="checkpoint, torchvision .pth or a name "
                                                "from `rcnn weights list` (default: as rcnn predict)")
                       ] = EXPORT.weights,
    onnx: Annotated[bool, typer.Option("--onnx", help="write ONNX (the default format)")] = False,
    torchscript: Annotated[bool, typer.Option("--torchscript", help="write TorchScript")] = False,
    formats: Annotated[list[str] | None, typer.Option("--format", help="onnx, torchscript, openvino (comma-separated "
                                                      "or repeated; with --onnx/--torchscript)")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="output file (default: beside the weights)")
                   ] = EXPORT.out,
    images: Annotated[list[str] | None, typer.Option("--images",
                                                     help="images for the parity check (repeatable)")] = EXPORT.images,
    input_dtype: Annotated[str, typer.Option("--input-dtype", help="uint8 (0-255) or float32 (0-1) input")
                           ] = EXPORT.input_dtype,
    int8: Annotated[bool, typer.Option("--int8", help="also NAME.int8.onnx / NAME.int8.xml: the ONNX graph quantized "
                                       "by onnxruntime, the OpenVINO IR by NNCF, calibrated on --images (default: "
                                       "training images), each kept if mAP50 vs fp32 >= 0.98")] = EXPORT.int8,
    half: Annotated[bool, typer.Option("--half", help="also NAME.fp16.torchscript for GPUs (fp16 backbone), traced "
                                       "and checked on the GPU, kept if mAP50 vs fp32 >= 0.98")] = EXPORT.half,
    json_path: Annotated[Path | None, typer.Option("--json", help="write a report: each file written or refused, "
                                                   "with its check's figures")] = EXPORT.json_path,
) -> None:
    """Export the whole detector (resize, RPN, NMS, heads, postprocess) and prove parity with torch."""
    from .commands import export as command

    chosen = command.suffixes_for(formats or [])
    flags = [s for s, wanted in ((".onnx", onnx), (".torchscript", torchscript)) if wanted]
    suffixes = list(dict.fromkeys(flags + chosen)) or list(EXPORT.suffixes)
    raise typer.Exit(command.run(ExportOptions(weights=weights, suffixes=suffixes, overrides=list(overrides),
                                               config_dir=config_dir, out=out, images=images, input_dtype=input_dtype,
                                               int8=int8, half=half, json_path=json_path)))


@app.command("benchmark")
def benchmark_cmd(
    overrides: Overrides = BENCHMARK.overrides,
    config_dir: ConfigDir = BENCHMARK.config_dir,
    weights: Annotated[Path | None, typer.Option("--weights", "-w", help="time these weights (default: "
                                                 "model.weights, or seeded random ones)")] = BENCHMARK.weights,
    images: Annotated[str | None, typer.Option("--images",
                                               help="folder or glob (default: the dataset's val split)")
                      ] = BENCHMARK.images,
    count: Annotated[int, typer.Option("--count", help="images to time")] = BENCHMARK.count,
    batch: Annotated[int, typer.Option("--batch", help="batch size for throughput and training")] = BENCHMARK.batch,
    repeats: Annotated[int, typer.Option("--repeats", help="timed repetitions")] = BENCHMARK.repeats,
    warmup: Annotated[int, typer.Option("--warmup", help="untimed warm-up runs")] = BENCHMARK.warmup,
    no_train: Annotated[bool, typer.Option("--no-train", help="skip the training-step timing")
                        ] = not BENCHMARK.train,
    scaling: Annotated[bool, typer.Option("--scaling", help="also time sizes 320-1024 x 300-2000 proposals")
                       ] = BENCHMARK.scaling,
    json_path: JsonPath = BENCHMARK.json_path,
    data_scale: Annotated[str | None, typer.Option(
        "--data-scale", metavar="N[,N...]", help="instead: time the data side (annotation loading, data check, "
        "COCO eval, DataLoader) on generated COCO sets of N images")] = BENCHMARK.data_scale,
    load_scale: Annotated[str | None, typer.Option(
        "--load-scale", metavar="N[,N...]", help="instead (or with --data-scale): time annotation loading alone "
        "on generated COCO sets of N images whose files are links to a few pictures (118287: COCO's size)")
    ] = BENCHMARK.load_scale,
    formats: Annotated[str, typer.Option("--formats", help="also export and time onnx, openvino, torchscript "
                                         "(comma-separated; fp32 and int8 files, OpenVINO bf16 where native, fp16 "
                                         "TorchScript on a GPU); default none")] = BENCHMARK.formats,
    profile: Annotated[bool, typer.Option("--profile", help="instead: ms per image of each inference stage for "
                                          "every torch path, and of a training step, with FLOP rates against "
                                          "this CPU's peak (on the CPU); with --formats onnx,openvino also of "
                                          "the exported files, by their runtimes' profilers")] = BENCHMARK.profile,
) -> None:
    """Time our detector and torchvision's with the same weights on the same images, side by side."""
    from .commands import benchmark as command

    command.run(BenchmarkOptions(overrides=list(overrides), config_dir=config_dir, weights=weights, images=images,
                                 count=count, batch=batch, repeats=repeats, warmup=warmup, train=not no_train,
                                 scaling=scaling, json_path=json_path, data_scale=data_scale, load_scale=load_scale,
                                 formats=formats, profile=profile))


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
