"""``rcnn eval``: a checkpoint on the configured validation split, with the full report."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ..model.factory import create_detector, read_checkpoint
from .module import DetectorModule
from .run import build_trainer, trainer_device_type, write_json


class EvalSetupError(ValueError):
    """Checkpoint and data that do not fit together; one line for the user."""


@dataclass
class EvalResult:
    report: Any                 # rcnn_cli.eval.EvalReport (None on ranks other than 0)
    out_dir: Path
    num_images: int


def dataset_for_checkpoint(cfg: DictConfig, meta: dict, dataset_overridden: bool) -> DictConfig:
    """Evaluate on the data the checkpoint was trained on unless the command line names other data."""
    if dataset_overridden or not meta.get("dataset"):
        return cfg
    cfg = cfg.copy()
    OmegaConf.set_struct(cfg, False)
    cfg.dataset = OmegaConf.create(meta["dataset"])
    return cfg


def evaluate_checkpoint(cfg: DictConfig, weights: Path, out_dir: Path, dataset_overridden: bool,
                        json_path: Path | None = None, predictions_path: Path | None = None) -> EvalResult:
    from ..data.datamodule import DetectionDataModule
    from ..eval import coco_results

    checkpoint = read_checkpoint(str(weights))
    meta = checkpoint[1]
    cfg = dataset_for_checkpoint(cfg, meta, dataset_overridden)
    datamodule = DetectionDataModule(cfg)
    datamodule.setup("validate")
    model_cfg = {**(meta.get("model") or OmegaConf.to_container(cfg.model, resolve=True)), "weights": str(weights)}
    detector = create_detector(model_cfg, checkpoint=checkpoint)
    if meta.get("class_names") and list(meta["class_names"]) != list(datamodule.class_names):
        raise EvalSetupError(f"{weights} was trained on classes {meta['class_names']} but the data has "
                             f"{datamodule.class_names}; pass the matching dataset=... or dataset.class_names=")
    prepare_for_eval(cfg, detector.model, datamodule)
    module = DetectorModule(detector, cfg.optim, meta)
    trainer = build_trainer(cfg, None, training=False)
    trainer.validate(module, datamodule=datamodule, verbose=False)
    if trainer.global_rank != 0:
        return EvalResult(None, out_dir, 0)
    report = module.last_report
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = report.summary()
    write_json(out_dir / "metrics.json", summary)
    if json_path:
        write_json(json_path, summary)
    write_json(out_dir / "thresholds.json", report.thresholds())
    report.save_plots(out_dir)
    if predictions_path:
        records = datamodule.records("val")
        evaluated = module.evaluated_all
        image_ids = [records[index].source_id for index, _, _ in evaluated]
        category_ids = datamodule.category_ids or list(range(1, len(datamodule.class_names) + 1))
        write_json(predictions_path, coco_results([p for _, p, _ in evaluated], image_ids, category_ids))
    return EvalResult(report, out_dir, len(module.evaluated_all))


def prepare_for_eval(cfg: DictConfig, model, datamodule) -> None:
    """Scores the model as ``model.precision`` runs it (see model/fast.py), so that eval tells what
    a precision costs. int8 calibrates on training images (validation ones when there are none):
    the score then says what int8 costs on data the ranges were not fitted to."""
    from ..data.images import read_chw
    from ..model.fast import prepare_for_inference
    from ..model.quantize import CALIBRATION_IMAGES

    precision = cfg.model.get("precision", "auto")
    device_type = trainer_device_type(cfg.trainer.get("accelerator", "auto"))
    images = []
    if precision == "int8":
        if device_type != "cpu":
            raise EvalSetupError("model.precision=int8 runs on the CPU; add trainer.accelerator=cpu")
        records = (datamodule.records("train") or datamodule.records("val"))[:CALIBRATION_IMAGES]
        images = [read_chw(r.path) for r in records]
    try:
        prepare_for_inference(model, precision, images, device_type=device_type)
    except ValueError as err:
        raise EvalSetupError(str(err)) from None
