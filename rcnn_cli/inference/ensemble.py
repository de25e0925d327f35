"""Ensembles: several detectors of the same classes (checkpoints of different models, the folds of a
cross-validation, exported files) run on every picture, their detections fused by weighted box fusion
(ops/fusion.py), as test-time augmentation fuses its views (inference/tta.py).

An ensemble is named where one weights file would be: ``--weights a.ckpt,b.ckpt,c.ckpt``, or an
``ensemble.yaml`` whose ``weights:`` lists the files, each relative to the yaml's folder::

    weights:
      - fold-1/checkpoints/best.ckpt
      - fold-2/checkpoints/best.ckpt
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

ENSEMBLE_SUFFIXES = (".yaml", ".yml")


def ensemble_members(weights: str | Path | Sequence[str | Path] | None) -> list[str] | None:
    """The member files when ``weights`` names an ensemble (a comma-separated list, a list, or an
    ensemble.yaml), else None. Each member must exist (a file, or a name from ``rcnn weights list``)."""
    if weights is None:
        return None
    if isinstance(weights, (list, tuple)):
        members = [str(member) for member in weights]
    elif Path(str(weights)).suffix.lower() in ENSEMBLE_SUFFIXES:
        members = read_ensemble(Path(str(weights)))
    elif "," in str(weights) and not os.path.exists(str(weights)):   # os.path: pathlib raises past 255 bytes
        members = [part.strip() for part in str(weights).split(",")]
    else:
        return None
    if not members or "" in members:
        raise UsageError(f"--weights {_shown(weights)}: an ensemble lists weights files, e.g. a.ckpt,b.ckpt")
    for member in members:
        _check_member(member, weights)
    return members


def _check_member(member: str, weights) -> None:
    from ..model import zoo

    if not (os.path.isfile(member) or zoo.is_named(member) or zoo.looks_like_a_name(member)):
        raise UsageError(f"--weights {_shown(weights)}: {member}: no such file")


def _shown(weights) -> str:
    return ",".join(map(str, weights)) if isinstance(weights, (list, tuple)) else str(weights)


def read_ensemble(path: Path) -> list[str]:
    """The member paths an ensemble.yaml lists, made relative to the yaml's folder (absolute ones kept)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"--weights {path}: no such file") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise UsageError(f"--weights {path}: not a readable ensemble file ({str(err).splitlines()[0]})") from None
    listed = data.get("weights") if isinstance(data, dict) else None
    if not isinstance(listed, list) or not all(isinstance(item, str) and item for item in listed):
        raise UsageError(f"--weights {path}: an ensemble file holds `weights:`, a list of weights files "
                         "(relative to its folder)")
    return [str(path.parent / item) for item in listed]


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
