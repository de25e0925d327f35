"""The exported file formats, known once: the name ``--format`` takes, the file suffix, the files
written beside it, what runs it, what precisions its runner takes and who makes its int8 twin.

Runners live in ``inference/exported.py`` and writers and quantizers in ``export/``, each keyed by
``ExportedFormat.name``; this table is the one list they all read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ExportedFormat:
    name: str                          # what --format takes
    suffix: str                        # the file's suffix, lower case
    runtime: str                       # what runs it, for the user
    companions: tuple[str, ...] = ()   # suffixes of files written beside it (OpenVINO's weights .bin)
    precisions: tuple[str, ...] = ("fp32",)   # what its runner can run (model.precision)
    int8_tool: str | None = None       # who quantizes it for --int8; None: no int8 twin
    extra: str = "export"              # the pip extra that installs its runtime


FORMATS: tuple[ExportedFormat, ...] = (
    ExportedFormat("onnx", ".onnx", "onnxruntime", int8_tool="onnxruntime"),
    ExportedFormat("torchscript", ".torchscript", "torchscript", extra=""),
    ExportedFormat("openvino", ".xml", "openvino", companions=(".bin",), precisions=("fp32", "bf16"),
                   int8_tool="NNCF"),
)
BY_NAME = {f.name: f for f in FORMATS}
BY_SUFFIX = {f.suffix: f for f in FORMATS}
SUFFIXES = tuple(BY_SUFFIX)


def format_of(path: str | Path | None) -> ExportedFormat | None:
    """The exported format a file name says, or None (a checkpoint, a state_dict, a named weight)."""
    return BY_SUFFIX.get(Path(str(path)).suffix.lower()) if path else None


def companions_of(path: Path) -> list[Path]:
    fmt = format_of(path)
    return [path.with_suffix(suffix) for suffix in fmt.companions] if fmt else []

# What an exported graph takes: uint8 0-255 or float32 0-1 pixels. The first is the default, of rcnn export's
# --input-dtype and of the writers in export/ (the benchmark writes its files without naming one).
INPUT_DTYPES = ("uint8", "float32")
