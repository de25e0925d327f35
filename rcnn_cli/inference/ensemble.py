"""Ensembles: several detectors of the same classes (checkpoints of different models, the folds of a
cross-validation, exported files) run on every picture, their detections fused by weighted box fusion
(ops/fusion.py), as test-time augmentation fuses its views (inference/tta.py).

An ensemble is named where one weights file would be: ``--weights a.ckpt,b.ckpt,c.ckpt``, or an
``ensemble.yaml`` whose ``weights:`` lists the files, each relative to the yaml's folder::

    weights:
      - fold-1/checkpoints/best.ckpt
      - fold-2/checkpoints/best.ckpt

That a weights argument names an ensemble, and its members, is decided with every other kind of
weights by ``model.source.weights_source`` (once, in ``settings.resolve``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
import yaml

from ..errors import UsageError
from ..files import write_text
from .predictor import Predictor
from .tta import FusionRule


def write_ensemble(path: str | Path, weights: Sequence[str | Path]) -> Path:
    """Writes ``path`` (ensemble.yaml) listing ``weights`` relative to its folder, so the folder can move."""
    path = Path(path)
    listed = [os.path.relpath(Path(w).resolve(), path.parent.resolve()) for w in weights]
    write_text(path, yaml.safe_dump({"weights": listed}, sort_keys=False))
    return path


def ensemble_predictor(predictors: Sequence[Predictor], members: Sequence[str], rule: FusionRule) -> Predictor:
    """One predictor whose ``detect`` runs every member on the batch and fuses each picture's detections.
    Members must share their class list (label i means the same class in each)."""
    first = predictors[0]
    for predictor, member in zip(predictors[1:], members[1:]):
        if predictor.class_names != first.class_names:
            raise UsageError(f"ensemble: {member} has classes {predictor.class_names} but {members[0]} has "
                             f"{first.class_names}; an ensemble fuses detectors of the same classes")

    def detect(images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        per_member = [predictor.detect(images) for predictor in predictors]
        return [rule.fuse(views) for views in zip(*per_member, strict=True)]

    runs_as = f"ensemble of {len(predictors)} ({', '.join(p.runs_as for p in predictors)})"
    return Predictor(detect, first.class_names, runs_as, first.device, None, first.config, first.metadata,
                     [note for p in predictors for note in p.notes], members=list(predictors))
