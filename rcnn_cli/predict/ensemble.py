"""Loading an ensemble (inference/ensemble.py) for ``rcnn predict``, ``eval``, ``serve`` and the Python
API: ``settings.resolve`` has already resolved each member by the one rule with its own stored config
(members may be different models, ``Settings.members``), the same typed values applying to all of them."""

from __future__ import annotations

from typing import Any

from ..inference.ensemble import ensemble_predictor
from ..inference.predictor import Predictor, load_predictor
from ..inference.tta import FusionRule
from ..settings.resolve import Settings


def load_ensemble(settings: Settings, **load: Any) -> Predictor:
    """One predictor fusing the members of the ensemble ``settings`` names (``settings.weights.kind ==
    "ensemble"``); load: load_predictor's keywords. The fusion keeps detections as the first member's
    model config says (thresholds, agnostic NMS)."""
    predictors = [load_predictor(member.cfg, member.checkpoint, typed=member.typed, source=member.weights, **load)
                  for member in settings.members]
    return ensemble_predictor(predictors, [member.weights.given for member in settings.members],
                              FusionRule.of(settings.members[0].cfg.model))
