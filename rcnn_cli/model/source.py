"""What a weights argument names, decided once: torchvision's named COCO weights, an exported file
(ONNX, TorchScript, OpenVINO: run by its runtime, not built from a config), a weights file (an rcnn
checkpoint or a plain state_dict; which of the two shows when it is read), or an ensemble of those
(``a.ckpt,b.ckpt``, a list, or an ``ensemble.yaml`` whose ``weights:`` lists the files, each relative
to the yaml's folder), each member decided in the same call.

``settings.resolve`` calls ``weights_source`` once per command and passes the answer on
(``Settings.weights``); nothing downstream looks at the suffix or the name again.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..errors import UsageError
from ..formats import ExportedFormat, format_of
from . import zoo
from .weights import WeightsError
from .zoo import NamedWeights


@dataclass(frozen=True)
class WeightsSource:
    given: str                              # as typed (a path or a name)
    kind: str                               # "named" | "exported" | "file" | "ensemble"
    named: NamedWeights | None = None       # kind "named": which torchvision weights
    exported: ExportedFormat | None = None  # kind "exported": which format
    members: tuple[WeightsSource, ...] = ()  # kind "ensemble": each member, decided (never an ensemble)

    @property
    def preset(self) -> str | None:
        """The model preset a named weight implies (``resnet50_fpn.coco`` -> ``resnet50_fpn``)."""
        return self.named.preset if self.named else None


def weights_source(given: str | Path | Sequence[str | Path]) -> WeightsSource:
    """The one decision. A typo of a name is one line with the nearest name; a file that is not
    there is one line too."""
    if (members := _ensemble_members(given)) is not None:
        return WeightsSource(_shown(given), "ensemble", members=tuple(_one_source(member) for member in members))
    return _one_source(str(given))


def _one_source(text: str) -> WeightsSource:
    if zoo.is_named(text) or zoo.looks_like_a_name(text):
        return WeightsSource(text, "named", named=zoo.detection_weights(text))
    if not os.path.exists(text):   # os.path: False for a name past 255 bytes, where pathlib raises
        raise WeightsError(f"{text}: not found (no such file; named weights: {', '.join(zoo.DETECTION)})")
    fmt = format_of(text)
    if fmt is not None:
        return WeightsSource(text, "exported", exported=fmt)
    return WeightsSource(text, "file")


ENSEMBLE_SUFFIXES = (".yaml", ".yml")


def _ensemble_members(weights) -> list[str] | None:
    """The member files when ``weights`` names an ensemble (a comma-separated list, a list, or an
    ensemble.yaml), else None. Each member must exist (a file, or a name from ``rcnn weights list``)."""
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
        if not (os.path.isfile(member) or zoo.is_named(member) or zoo.looks_like_a_name(member)):
            raise UsageError(f"--weights {_shown(weights)}: {member}: no such file")
    return members


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
