"""``rcnn train`` and ``rcnn eval``: compose data, detector, LightningModule and Trainer."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, RichProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from ..model.factory import create_detector, read_checkpoint
from ..model.fast import use_channels_last
from ..model.hardware import training_autocast_dtype
from .callbacks import PlotMetrics, SaveOnInterrupt
from .checkpoint_io import AtomicCheckpointIO
from .module import DetectorModule


@dataclass
class TrainResult:
    run_dir: Path
    best_checkpoint: Path | None
    metrics: dict[str, float]
    notes: list[str]


def free_run_dir(base: Path, name: str) -> Path:
    """runs/<name>, or runs/<name>-2, -3... when taken (as Ultralytics numbers its runs)."""
    candidate, n = base / name, 2
    while candidate.exists():
        candidate, n = base / f"{name}-{n}", n + 1
    return candidate


# Lightning's DDP launcher re-runs the command once per extra rank; they must all write to the
# folder rank 0 chose, not number a new one each.
RUN_DIR_ENV = "RCNN_RUN_DIR"


def resolve_run_dir(cfg: DictConfig) -> Path:
    if os.environ.get(RUN_DIR_ENV):
        return Path(os.environ[RUN_DIR_ENV])
    if cfg.get("resume"):
        # runs/x/checkpoints/last.ckpt -> runs/x: a resumed run keeps writing where it was.
        return Path(cfg.resume).resolve().parent.parent
    if cfg.get("run_dir"):
        return Path(cfg.run_dir)
    return free_run_dir(Path(cfg.runs_root), cfg.get("name") or f"{cfg.dataset.name}-{cfg.model.name}")


def global_batch_size(cfg: DictConfig) -> int:
    devices = cfg.trainer.devices if isinstance(cfg.trainer.devices, int) else 1
    return (int(cfg.dataset.batch_size) * max(devices, 1) * int(cfg.trainer.num_nodes)
            * int(cfg.trainer.accumulate_grad_batches))


def trainer_device_type(accelerator: str) -> str:
    """``cuda`` or ``cpu``: where a Trainer with ``trainer.accelerator`` will put the model."""
    return "cuda" if accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available() else "cpu"


def training_precision(precision: str, accelerator: str) -> str:
    """Lightning's precision for ``trainer.precision``; ``auto`` is bf16-mixed where a probe
    measures bf16 convs faster on the device that will train (CPUs with avx512_bf16/AMX, recent
    GPUs), 16-mixed on other GPUs, 32-true on other CPUs."""
    if precision != "auto":
        return precision
    return {torch.bfloat16: "bf16-mixed", torch.float16: "16-mixed", None: "32-true"}[
        training_autocast_dtype(trainer_device_type(accelerator))]


def build_trainer(cfg: DictConfig, run_dir: Path | None, training: bool = True) -> L.Trainer:
    """training=False: evaluation, always in fp32 here; ``model.precision`` says how the model
    itself runs (model/fast.py), so autocast must not change it behind its back."""
    t = cfg.trainer
    precision = training_precision(t.precision, t.accelerator) if training else (
        "32-true" if t.precision == "auto" else t.precision)
    callbacks: list[L.Callback] = [RichProgressBar()]
    loggers: list[Any] | bool = False
    if training:
        checkpoints = run_dir / "checkpoints"
        callbacks += [
            ModelCheckpoint(dirpath=checkpoints, filename="best", monitor=t.monitor, mode=t.monitor_mode,
                            save_last=True, save_top_k=1, enable_version_counter=False,
                            auto_insert_metric_name=False),
            SaveOnInterrupt(dirpath=checkpoints, filename="interrupted"),
            PlotMetrics(run_dir),
        ]
        if t.early_stopping_patience:
            callbacks.append(EarlyStopping(monitor=t.monitor, mode=t.monitor_mode,
                                           patience=int(t.early_stopping_patience)))
        if t.ema_decay:
            from lightning.pytorch.callbacks import EMAWeightAveraging

            callbacks.append(EMAWeightAveraging(decay=float(t.ema_decay)))
        loggers = [CSVLogger(run_dir, name="", version=""),
                   TensorBoardLogger(run_dir, name="tensorboard", version="", default_hp_metric=False)]
    return L.Trainer(
        accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes, strategy=t.strategy,
        precision=precision, max_epochs=t.max_epochs, accumulate_grad_batches=t.accumulate_grad_batches,
        gradient_clip_val=t.gradient_clip_val, log_every_n_steps=t.log_every_n_steps,
        check_val_every_n_epoch=t.check_val_every_n_epoch, limit_train_batches=t.limit_train_batches,
        limit_val_batches=t.limit_val_batches, deterministic=t.deterministic, default_root_dir=run_dir,
        logger=loggers, callbacks=callbacks, plugins=[AtomicCheckpointIO()],
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
    return {split: [str(r.path) for r in datamodule.records(split)] for split in ("train", "val")}


def train(cfg: DictConfig, say=print) -> TrainResult:
    """Train as ``cfg`` says; returns where everything went and the final validation metrics."""
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    if cfg.get("resume"):
        cfg = _with_stored_model(cfg, cfg.resume)
    run_dir = resolve_run_dir(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    chose_run_dir = RUN_DIR_ENV not in os.environ
    os.environ[RUN_DIR_ENV] = str(run_dir.resolve())
    try:
        return _fit(cfg, run_dir, say)
    finally:
        if chose_run_dir:  # the next run of a sweep picks its own folder
            os.environ.pop(RUN_DIR_ENV, None)


def _fit(cfg: DictConfig, run_dir: Path, say) -> TrainResult:
    from ..data.datamodule import DetectionDataModule

    datamodule = DetectionDataModule(cfg)
    datamodule.setup("fit")
    detector = create_detector(cfg.model, datamodule.class_names, finetune=bool(cfg.model.weights))
    for note in detector.notes:
        say(f"note: {note}")
    # channels_last: the same fp32 cost, and what makes reduced-precision convs fast (resnet18_fpn
    # at 800 px, batch 2, 2 cores with AMX: bf16-mixed step 4.6 s NCHW, 3.3 s channels_last).
    use_channels_last(detector.model)
    module = DetectorModule(detector, cfg.optim, checkpoint_metadata(cfg, detector, datamodule),
                            global_batch=global_batch_size(cfg), image_paths=image_paths(datamodule))
    _write_text(run_dir / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    trainer = build_trainer(cfg, run_dir)
    say(f"precision: {trainer.precision}" + (" (trainer.precision=auto)" if cfg.trainer.precision == "auto" else ""))
    resume = {"ckpt_path": cfg.resume, "weights_only": True} if cfg.get("resume") else {}
    trainer.fit(module, datamodule=datamodule, **resume)
    best = run_dir / "checkpoints" / "best.ckpt"
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    return TrainResult(run_dir, best if best.exists() else None, metrics, detector.notes)


def _with_stored_model(cfg: DictConfig, checkpoint_path: str) -> DictConfig:
    """A resumed run rebuilds the model it saved, whatever the command line's model preset."""
    _, meta = read_checkpoint(checkpoint_path)
    cfg = cfg.copy()
    if meta.get("model"):
        OmegaConf.set_struct(cfg, False)
        cfg.model = OmegaConf.create({**meta["model"], "weights": None})
    return cfg


def _write_text(path: Path, text: str) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(text)
    os.replace(temp, path)


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_text(path, json.dumps(data, indent=2))
