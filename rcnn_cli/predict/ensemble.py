"""Loading an ensemble (inference/ensemble.py) for ``rcnn predict``, ``eval``, ``serve`` and the Python
API: each member's settings are resolved by the one rule with its own stored config (members may be
different models), then the same typed values apply to all of them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..inference.ensemble import ensemble_predictor
from ..inference.predictor import Predictor, load_predictor
from ..inference.tta import FusionRule
from ..settings.resolve import Settings, resolve


def load_ensemble(command: str, members: Sequence[str], overrides: Sequence[str] = (),
                  values: Mapping[str, Any] | None = None, config_dir: str | Path | None = None,
                  score_floor: float | None = None, **load: Any) -> tuple[list[Settings], Predictor]:
    """(each member's settings, one predictor fusing them). score_floor: as ``settings.resolve`` takes it
    (rcnn predict and serve lower the model's to --conf); load: load_predictor's keywords.
    The fusion keeps detections as the first member's model config says (thresholds, agnostic NMS)."""
    settings, predictors = [], []
    for weights in members:
        member = resolve(command, overrides, values, weights=weights, config_dir=config_dir, score_floor=score_floor)
        settings.append(member)
        predictors.append(load_predictor(member.cfg, member.checkpoint, typed=member.typed, source=member.weights,
                                         **load))
    return settings, ensemble_predictor(predictors, list(members), FusionRule.of(settings[0].cfg.model))
