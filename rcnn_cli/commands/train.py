"""``rcnn train``: compose data, detector, LightningModule and Trainer; one run or a sweep."""

from __future__ import annotations

import os
from contextlib import suppress
from dataclasses import dataclass
from itertools import product
from pathlib import Path

import lightning as L
from omegaconf import DictConfig, OmegaConf
from rich.markup import escape
from rich.table import Table

from ..errors import JobFailed, RcnnError, UsageError
from ..files import numbered_folder, write_text, writes_into
from ..settings.resolve import Settings, resolve
from ..settings.schema import ConfigError
from . import console, say, stdout, writable
from .options import TrainOptions


@dataclass
class TrainResult:
    run_dir: Path
    best_checkpoint: Path | None
    metrics: dict[str, float]
    notes: list[str]


def run(options: TrainOptions) -> list[tuple[list[str], TrainResult]]:
    if options.folds is not None:   # train() refuses a whole cross-validation: commands/crossval.py runs it
        options.overrides = [*options.overrides, f"dataset.folds={options.folds}"]
    runs = sweep(options.overrides) if options.multirun else [options.overrides]
    results = []
    for overrides in runs:
        if options.multirun:
            console.rule(escape(" ".join(overrides)) or "defaults")
        settings = resolve("train", overrides, config_dir=options.config_dir)
        results.append((overrides, train(settings)))
    print_summary(results, options.multirun)
    return results


def sweep(overrides: list[str]) -> list[list[str]]:
    """Hydra-style sweeps: ``a=1,2 b=x,y`` -> the 4 override lists, in order."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as err:  # hydra's parser errors are long; the first line says enough
        raise ConfigError(f"cannot parse overrides: {str(err).splitlines()[0]}") from None
    choices = [[f"{o.input_line.split('=')[0]}={v}" for v in o.sweep_string_iterator()]
               if o.is_sweep_override() else [o.input_line] for o in parsed]
    return [list(combo) for combo in product(*choices)]


# Lightning's DDP launcher re-runs the command once per extra rank; they must all write to the
# folder rank 0 chose, not number a new one each.
RUN_DIR_ENV = "RCNN_RUN_DIR"


def resolve_run_dir(cfg: DictConfig) -> Path:
    if os.environ.get(RUN_DIR_ENV):
        return Path(os.environ[RUN_DIR_ENV])
    if cfg.resume:
        # runs/x/checkpoints/last.ckpt -> runs/x: a resumed run keeps writing where it was.
        return Path(cfg.resume).resolve().parent.parent
    if cfg.run_dir:
        return Path(cfg.run_dir)
    return numbered_folder(Path(cfg.runs_root) / (cfg.name or f"{cfg.dataset.name}-{cfg.model.name}"))


def train(settings: Settings, callbacks: list[L.Callback] = ()) -> TrainResult:
    """Train as ``settings.cfg`` says; returns where everything went and the final validation metrics.
    callbacks: added to the configured ones (``rcnn tune`` adds its pruning callback)."""
    import torch

    cfg = settings.cfg
    if cfg.dataset.folds is not None and cfg.dataset.fold is None:
        raise UsageError(f"dataset.folds={cfg.dataset.folds} is a cross-validation of that many runs: `rcnn train "
                         "--folds K` runs it (not with --multirun or rcnn tune); dataset.fold=k trains fold k alone")
    for note in settings.notes:
        say(f"note: {note}")
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    run_dir = resolve_run_dir(cfg)
    fresh = not run_dir.exists()
    writable(f"run_dir {run_dir}", run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    chose_run_dir = RUN_DIR_ENV not in os.environ
    os.environ[RUN_DIR_ENV] = str(run_dir.resolve())
    try:
        with writes_into(run_dir):
            return _fit(cfg, run_dir, list(callbacks))
    except RcnnError:
        if fresh:     # refused before anything was written: no run folder that looks like a run
            with suppress(OSError):
                run_dir.rmdir()
        raise
    except torch.OutOfMemoryError:
        size = int(cfg.dataset.batch_size)
        raise JobFailed(f"out of GPU memory with dataset.batch_size={size}; try dataset.batch_size="
                        f"{max(size // 2, 1)} (and trainer.accumulate_grad_batches=2 to keep the effective batch)"
                        ) from None
    finally:
        if chose_run_dir:  # the next run of a sweep picks its own folder
            os.environ.pop(RUN_DIR_ENV, None)


def _fit(cfg: DictConfig, run_dir: Path, callbacks: list[L.Callback]) -> TrainResult:
    from ..data.pipeline.datamodule import DetectionDataModule
    from ..data.readers.load import require_training_boxes
    from ..inference.fast import use_channels_last
    from ..model.factory import create_detector
    from ..training.module import DetectorModule
    from ..training.trainer import build_trainer, checkpoint_metadata, image_paths, validation_tiling

    datamodule = DetectionDataModule(cfg)
    datamodule.setup("fit")
    require_training_boxes(datamodule.loaded)
    detector = create_detector(cfg.model, datamodule.class_names, finetune=bool(cfg.model.weights))
    for note in detector.notes:
        say(f"note: {note}")
    # channels_last: the same fp32 cost, and what makes reduced-precision convs fast (resnet18_fpn
    # at 800 px, batch 2, 2 cores with AMX: bf16-mixed step 4.6 s NCHW, 3.3 s channels_last).
    use_channels_last(detector.model)
    module = DetectorModule(detector, cfg.optim, checkpoint_metadata(cfg, detector, datamodule),
                            batch_size=int(cfg.dataset.batch_size), image_paths=image_paths(datamodule),
                            tiling=validation_tiling(cfg, datamodule))
    write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    trainer = build_trainer(cfg, run_dir, extra_callbacks=callbacks)
    say(f"precision: {trainer.precision}" + (" (trainer.precision=auto)" if cfg.trainer.precision == "auto" else ""))
    resume = {"ckpt_path": cfg.resume, "weights_only": True} if cfg.resume else {}
    trainer.fit(module, datamodule=datamodule, **resume)
    best = run_dir / "checkpoints" / "best.ckpt"
    if trainer.is_global_zero:
        from ..training.loggers import finish_tracking

        finish_tracking(trainer.loggers, [run_dir / "metrics.png", run_dir / "config.yaml", best])
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    return TrainResult(run_dir, best if best.exists() else None, metrics, detector.notes)


SHOWN = ("val/map", "val/map_50", "val/voc07_map50", "val/loss", "train/loss_epoch")


def print_summary(results: list[tuple[list[str], TrainResult]], multirun: bool) -> None:
    """One row per run; the best of a sweep in bold."""
    table = Table(title="training runs" if multirun else "training finished", title_justify="left")
    if multirun:
        table.add_column("overrides")
    for name in SHOWN:
        table.add_column(name.split("/", 1)[1], justify="right")
    table.add_column("run folder")
    best = max(results, key=lambda item: item[1].metrics.get("val/map", -1.0))
    for overrides, result in results:
        row = [escape(" ".join(overrides))] if multirun else []     # the user's text, not markup
        row += [f"{result.metrics[n]:.4f}" if n in result.metrics else "-" for n in SHOWN]
        row.append(escape(str(result.run_dir)))
        table.add_row(*row, style="bold green" if multirun and result is best[1] else None)
    stdout.print(table)
    last = results[-1][1]
    stdout.print(f"checkpoints: {last.run_dir / 'checkpoints'} (best.ckpt, last.ckpt); plot: "
                 f"{last.run_dir / 'metrics.png'}; logs: metrics.csv, tensorboard/", markup=False, highlight=False)
