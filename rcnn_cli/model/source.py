"""What a weights argument names, decided once: torchvision's named COCO weights, an exported file
(ONNX, TorchScript, OpenVINO: run by its runtime, not built from a config) or a weights file
(an rcnn checkpoint or a plain state_dict; which of the two shows when it is read).

``settings.resolve`` calls ``weights_source`` once per command and passes the answer on
(``Settings.weights``); nothing downstream looks at the suffix or the name again.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..formats import ExportedFormat, format_of
from . import zoo
from .weights import WeightsError
from .zoo import NamedWeights


@dataclass(frozen=True)
class WeightsSource:
    given: str                              # as typed (a path or a name)
    kind: str                               # "named" | "exported" | "file"
    named: NamedWeights | None = None       # kind "named": which torchvision weights
    exported: ExportedFormat | None = None  # kind "exported": which format

    @property
    def preset(self) -> str | None:
        """The model preset a named weight implies (``resnet50_fpn.coco`` -> ``resnet50_fpn``)."""
        return self.named.preset if self.named else None


def weights_source(given: str | Path) -> WeightsSource:
    """The one decision. A typo of a name is one line with the nearest name; a file that is not
    there is one line too."""
    text = str(given)
    if zoo.is_named(text) or zoo.looks_like_a_name(text):
        return WeightsSource(text, "named", named=zoo.detection_weights(text))
    if not os.path.exists(text):   # os.path: False for a name past 255 bytes, where pathlib raises
        raise WeightsError(f"{text}: not found (no such file; named weights: {', '.join(zoo.DETECTION)})")
    fmt = format_of(text)
    if fmt is not None:
        return WeightsSource(text, "exported", exported=fmt)
    return WeightsSource(text, "file")
