"""The Lightning Trainer from the ``trainer`` config group (Trainer arguments only) and its
callbacks from the ``callbacks`` group."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, RichProgressBar
from omegaconf import DictConfig, OmegaConf

from ..hardware import training_autocast_dtype
from .callbacks import PlotMetrics, SaveOnInterrupt
from .checkpoint_io import AtomicCheckpointIO
from .loggers import build_loggers


def trainer_device_type(accelerator: str) -> str:
    """``cuda`` or ``cpu``: where a Trainer with ``trainer.accelerator`` will put the model."""
    return "cuda" if accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available() else "cpu"


def training_precision(precision: str, accelerator: str, processes: int = 1) -> str:
    """Lightning's precision for ``trainer.precision``; ``auto`` is bf16-mixed where a probe
    measures bf16 convs faster on the device that will train (CPUs with avx512_bf16/AMX, recent
    GPUs), 16-mixed on other GPUs, 32-true on other CPUs. With several processes the choice is
    made from hardware support, identical on every rank (see ``training_autocast_dtype``)."""
    if precision != "auto":
        return precision
    return {torch.bfloat16: "bf16-mixed", torch.float16: "16-mixed", None: "32-true"}[
        training_autocast_dtype(trainer_device_type(accelerator), processes)]


def planned_processes(trainer_cfg: DictConfig) -> int:
    """How many training processes the run will have, before the Trainer exists: launched by
    torchrun/SLURM (WORLD_SIZE set), or by Lightning from trainer.devices x trainer.num_nodes."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return int(os.environ["WORLD_SIZE"])
    devices = trainer_cfg.devices
    if isinstance(devices, str):   # "auto", "4" (a count) or "0,1,2,3" (indices), as Lightning reads them
        parts = [d for d in devices.split(",") if d.strip()]
        if devices == "auto":
            devices = -1
        else:
            devices = int(devices) if len(parts) == 1 and devices.strip().lstrip("-").isdigit() else len(parts)
    count = len(devices) if OmegaConf.is_list(devices) or isinstance(devices, list) else int(devices)
    if count == -1:
        count = max(torch.cuda.device_count(), 1) if trainer_device_type(trainer_cfg.accelerator) == "cuda" else 1
    return max(count, 1) * int(trainer_cfg.num_nodes)


def build_callbacks(callbacks_cfg: DictConfig, trainer_cfg: DictConfig, run_dir: Path) -> list[L.Callback]:
    """best/last/interrupted checkpoints, metrics.png, and early stopping / EMA when asked for."""
    checkpoint = callbacks_cfg.checkpoint
    folder = run_dir / "checkpoints"
    callbacks: list[L.Callback] = [
        ModelCheckpoint(dirpath=folder, filename="best", monitor=checkpoint.monitor, mode=checkpoint.mode,
                        save_last=True, save_top_k=1, enable_version_counter=False, auto_insert_metric_name=False),
        SaveOnInterrupt(dirpath=folder, filename="interrupted"),
        PlotMetrics(run_dir),
    ]
    patience = callbacks_cfg.early_stopping.patience
    if patience:
        callbacks.append(EarlyStopping(monitor=checkpoint.monitor, mode=checkpoint.mode,
                                       patience=patience_in_checks(int(patience), trainer_cfg)))
    if callbacks_cfg.ema.decay:
        from lightning.pytorch.callbacks import EMAWeightAveraging

        callbacks.append(EMAWeightAveraging(decay=float(callbacks_cfg.ema.decay)))
    return callbacks


def patience_in_checks(epochs: int, trainer_cfg: DictConfig) -> int:
    """Lightning counts patience in validation runs; ours is stated in epochs. With validation every
    2 epochs, 5 epochs of patience is 3 validations (rounded up: never stop earlier than said)."""
    return max(1, math.ceil(epochs / int(trainer_cfg.check_val_every_n_epoch)))


def build_trainer(cfg: DictConfig, run_dir: Path | None, training: bool = True,
                  extra_callbacks: list[L.Callback] = ()) -> L.Trainer:
    """training=False: evaluation, in fp32 unless trainer.precision names another; ``model.precision``
    says how the model itself runs (inference/fast.py), so autocast must not change it behind its back."""
    args: dict[str, Any] = OmegaConf.to_container(cfg.trainer, resolve=True)
    args["precision"] = (training_precision(args["precision"], args["accelerator"], planned_processes(cfg.trainer))
                         if training
                         else "32-true" if args["precision"] == "auto" else args["precision"])
    callbacks: list[L.Callback] = [RichProgressBar()]
    loggers: list[Any] | bool = False
    if training:
        callbacks += build_callbacks(cfg.callbacks, cfg.trainer, run_dir) + list(extra_callbacks)
        loggers = build_loggers(cfg, run_dir)
    return L.Trainer(
        **args, default_root_dir=run_dir, logger=loggers, callbacks=callbacks, plugins=[AtomicCheckpointIO()],
        use_distributed_sampler=False,  # our batch sampler shards by rank itself
        enable_model_summary=False, num_sanity_val_steps=0,
    )


def checkpoint_metadata(cfg: DictConfig, detector, datamodule) -> dict[str, Any]:
    """What a checkpoint must carry to rebuild the detector and read its outputs alone."""
    return {
        "class_names": list(detector.class_names),
        "category_ids": list(datamodule.category_ids) if datamodule.category_ids else None,
        "model": _plain(detector.config),
        "dataset": OmegaConf.to_container(cfg.dataset, resolve=True),
        "config": OmegaConf.to_container(cfg, resolve=True),
    }


def _plain(config: Any) -> dict[str, Any]:
    """Builtin dicts and lists only, so the checkpoint loads with weights_only=True."""
    return OmegaConf.to_container(OmegaConf.create(dict(config)), resolve=True)


def image_paths(datamodule) -> dict[str, list[str]]:
    """Per split, the name of each item (a tile is its picture plus where it sits), for error messages."""
    def name(record) -> str:
        window = getattr(record, "window", None)
        return str(record.path) if window is None else f"{record.path} (tile at x={window[0]}, y={window[1]})"

    return {"train": [name(r) for r in datamodule.train_items()],
            "val": [str(r.path) for r in datamodule.records("val")]}


def validation_tiling(cfg: DictConfig, datamodule):
    """Trained on tiles: validation detects tiled with the same grid (training/tiled_validation.py)."""
    from .tiled_validation import Tiling

    if datamodule.tile is None:
        return None
    data = cfg.dataset
    return Tiling(datamodule.tile, float(data.tile_overlap), float(data.tile_min_visibility), int(data.batch_size))
