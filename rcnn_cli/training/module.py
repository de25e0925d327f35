"""The LightningModule: our Faster R-CNN, its losses, validation loss and mAP, and checkpoints
that carry everything needed to rebuild the detector (class names, model and data config)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor

from ..errors import JobFailed
from ..model.factory import LoadedDetector
from ..model.weights import META_KEY
from .optim import REFERENCE_BATCH, build_optimizer, build_scheduler, scaled_lr
from .tiled_validation import Tiling, tiled_forward

# Consecutive non-finite 16-mixed steps that mean the run diverged rather than overflowed once.
MAX_SKIPPED_FP16_STEPS = 20


class NonFiniteLossError(JobFailed):
    """A loss became NaN or infinite; the message names the loss terms and the images."""


class DetectorModule(L.LightningModule):
    """Wraps a detector for Lightning.

    Batches are ``(images, targets)``: images a list of (3, H, W) uint8 tensors, targets a list of
    ``{"boxes": (N, 4) xyxy, "labels": (N,), "ignore": (N,) bool, "index": int}``.
    """

    def __init__(self, detector: LoadedDetector, optim_cfg: Mapping[str, Any], metadata: dict[str, Any],
                 batch_size: int = 1, image_paths: Mapping[str, list[str]] | None = None,
                 tiling: Tiling | None = None):
        super().__init__()
        self.model = detector.model
        self.class_names = detector.class_names
        self.optim_cfg = dict(optim_cfg)
        self.metadata = metadata            # stored in every checkpoint under META_KEY
        self.batch_size = batch_size        # per device; the global batch is known once a Trainer runs
        self.image_paths = image_paths or {}  # split -> paths, to name images in error messages
        self.evaluated: list[tuple[int, dict, dict]] = []   # (index, prediction, target) this epoch
        self.skipped_in_a_row = 0                           # 16-mixed steps skipped for a non-finite loss
        self.last_report = None
        self.tiling = tiling                # trained on tiles: validation detects tiled (tiled_validation.py)

    # -- training ---------------------------------------------------------------------------
    def training_step(self, batch, batch_idx: int) -> Tensor:
        images, targets = batch
        losses = self.model(images, targets)
        total = sum(losses.values())
        if not torch.isfinite(total):
            if self._fp16_skips_step():
                return None     # Lightning then skips backward and the optimizer step, as the loss scaler would
            raise NonFiniteLossError(self._non_finite_message(losses, targets, "train"))
        self.skipped_in_a_row = 0
        self.log_dict({f"train/{name}": value.detach() for name, value in losses.items()},
                      batch_size=len(images))
        self.log("train/loss", total.detach(), prog_bar=True, on_epoch=True, batch_size=len(images))
        return total

    def _fp16_skips_step(self) -> bool:
        """Under 16-mixed an overflow to inf is expected now and then: fp16 tops out at 65504, and the
        gradient scaler exists for this. The step is skipped; only a run of them means divergence.
        bf16 and fp32 have fp32's range, so a non-finite loss there is divergence at once."""
        precision = str(self.trainer.precision) if self._trainer is not None else "32-true"
        if not precision.startswith("16"):
            return False
        self.skipped_in_a_row += 1
        if self.skipped_in_a_row == 1 or self.skipped_in_a_row % 10 == 0:
            rank_zero_info(f"16-mixed: non-finite loss at step {self.global_step}, step skipped "
                           f"({self.skipped_in_a_row} in a row)")
        return self.skipped_in_a_row < MAX_SKIPPED_FP16_STEPS

    def _non_finite_message(self, losses: dict[str, Tensor], targets: list[dict], split: str) -> str:
        bad = [name for name, value in losses.items() if not torch.isfinite(value)]
        paths = self.image_paths.get(split, [])
        names = [paths[int(t["index"])] if int(t["index"]) < len(paths) else f"#{int(t['index'])}"
                 for t in targets]
        return (f"non-finite {', '.join(bad)} at step {self.global_step} on images {', '.join(map(str, names))}; "
                "lower optim.lr or set trainer.gradient_clip_val (the weights from before this step, all finite, "
                "are in checkpoints/interrupted.ckpt)")

    def global_batch(self) -> int:
        """Images per optimizer step over every process: what the learning rate is scaled to. Asked of
        the Trainer itself, so every form of trainer.devices (4, -1, auto, [0,1], "0,1") and nodes count."""
        trainer = self.trainer
        return self.batch_size * trainer.world_size * trainer.accumulate_grad_batches

    def configure_optimizers(self):
        global_batch = self.global_batch()
        lr = scaled_lr(self.optim_cfg, global_batch)
        how = ("optim.lr" if self.optim_cfg["lr"] is not None else
               f"optim.base_lr {float(self.optim_cfg['base_lr']):g} per {REFERENCE_BATCH} images, scaled")
        rank_zero_info(f"learning rate {lr:g} ({how}; global batch {global_batch} = {self.batch_size} per device "
                       f"x {self.trainer.world_size} processes x {self.trainer.accumulate_grad_batches} accumulated)")
        optimizer = build_optimizer(self.model, self.optim_cfg, lr)
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        scheduler = build_scheduler(optimizer, self.optim_cfg, total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # -- validation -------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self.evaluated = []
        self.val_loss = torch.zeros(2, dtype=torch.float64)   # (sum of per-image losses, images)

    def validation_step(self, batch, batch_idx: int) -> None:
        """Under DDP a rank may get padding batches (copies marked ``padding``) so that every rank runs
        as many steps as the others; they run the same collectives but count nowhere."""
        images, targets = batch
        if self.tiling is None:
            losses, detections = self.model.forward_with_losses(images, targets)
            loss = float(sum(losses.values()))
        else:
            loss, detections = tiled_forward(self.model, images, targets, self.tiling,
                                             float(self.model.roi_heads.nms_thresh))
        real = [not t.get("padding", False) for t in targets]
        self.val_loss += torch.tensor([loss * sum(real), sum(real)], dtype=torch.float64)
        for detection, target, counts in zip(detections, targets, real, strict=True):
            if counts:
                self.evaluated.append((int(target["index"]), _to_cpu(detection), _to_cpu(target)))

    def on_validation_epoch_end(self) -> None:
        from ..eval import evaluate

        evaluated = gather_from_all_ranks(self.evaluated)
        loss_sum, images = self._all_ranks_sum(self.val_loss).tolist()
        if images:
            self.log("val/loss", loss_sum / images, prog_bar=True)
        summary = None
        if self.global_rank == 0 and evaluated:
            predictions = [prediction for _, prediction, _ in evaluated]
            targets = [target for _, _, target in evaluated]
            # COCO AP counts as many detections per image as the model may make (box_detections_per_img).
            self.last_report = evaluate(predictions, targets, self.class_names,
                                        max_detections=self.model.roi_heads.detections_per_img)
            summary = self.last_report.summary()
        summary = self.trainer.strategy.broadcast(summary, src=0) if self.trainer else summary
        if summary:
            metrics = {f"val/{key}": float(value) for key, value in summary.items()
                       if key not in ("per_class", "map_50") and value is not None}
            self.log_dict(metrics)
            self.log("val/map_50", float(summary["map_50"]), prog_bar=True)
        self.evaluated_all = evaluated

    def _all_ranks_sum(self, values: Tensor) -> Tensor:
        if self._trainer is None or self.trainer.world_size == 1:
            return values
        return self.trainer.strategy.reduce(values.to(self.device), reduce_op="sum").cpu()

    # -- checkpoints ------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[META_KEY] = self.metadata

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        stored = checkpoint.get(META_KEY, {}).get("class_names")
        if stored and list(stored) != list(self.class_names):
            raise ValueError(f"the checkpoint was trained on classes {stored}, the data has {self.class_names}")


def _to_cpu(item: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value.detach().cpu() if isinstance(value, Tensor) else value for key, value in item.items()}


def gather_from_all_ranks(items: list[tuple[int, dict, dict]]) -> list[tuple[int, dict, dict]]:
    """Every rank's (index, prediction, target) triples, in dataset order, each index once.

    Validation shards are disjoint (padding batches are left out before), so the union is the whole
    validation set."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, items)
        items = [item for rank_items in gathered for item in rank_items]
    unique = {index: (index, prediction, target) for index, prediction, target in items}
    return [unique[index] for index in sorted(unique)]
