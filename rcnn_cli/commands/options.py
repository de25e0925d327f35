"""The options object of each ``rcnn`` verb, and the one place each option's default is written: ``cli.py``
declares every option with the default read from here (``defaults(PredictOptions).conf``), and the
commands, the tests and the Python API build these objects. The defaults that predict, serve and the
library share (score threshold, batch, tile overlap, serve's limits) live lower, in predict/limits.py,
and are referenced here. Kept free of heavy imports (no torch, Lightning or Hydra) so that
``rcnn --help`` shows the defaults without loading a model stack."""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from types import SimpleNamespace

from ..predict.limits import PREDICT, ServeLimits


def defaults(options: type) -> SimpleNamespace:
    """Every field of the dataclass ``options`` that has a default, by name (a field without one, such as
    predict's sources, is absent, so asking for it fails at import, not silently)."""
    found = {}
    for item in fields(options):
        if item.default is not MISSING:
            found[item.name] = item.default
        elif item.default_factory is not MISSING:
            found[item.name] = item.default_factory()
    return SimpleNamespace(**found)


def shorthand(overrides: list[str], **options: str | None) -> list[str]:
    """``--device cuda`` is ``device=cuda`` typed last: options go through the same rule."""
    keys = {"device": "device", "precision": "model.precision", "tta": "model.tta"}
    return list(overrides) + [f"{keys[name]}={value}" for name, value in options.items() if value is not None]


@dataclass
class TrainOptions:
    overrides: list[str] = field(default_factory=list)
    config_dir: Path | None = None
    multirun: bool = False
    folds: int | None = None         # --folds K (dataset.folds=K): cross-validation, run by commands/crossval.py


@dataclass
class TuneOptions:
    overrides: list[str] = field(default_factory=list)
    config_dir: Path | None = None


@dataclass
class CheckOptions:
    overrides: list[str] = field(default_factory=list)
    config_dir: Path | None = None
    json_path: Path | None = None
    show: int = 0
    out: Path = Path("runs/data-check")
    augmented: bool = False          # --show draws what the model sees after augmentation and resize
    weights: str | None = None       # rank likely label errors with this checkpoint (commands/label_issues.py)


@dataclass
class EvalOptions:
    weights: Path
    overrides: list[str] = field(default_factory=list)
    config_dir: Path | None = None
    json_path: Path | None = None
    predictions: Path | None = None
    out: Path | None = None
    tile: int | None = None          # score huge pictures in overlapping tiles, as rcnn predict --tile
    overlap: float = PREDICT.tile_overlap
    tta: bool = False                # shorthand for model.tta=true
    label_issues: bool = False       # rank likely label errors too (commands/label_issues.py)
    precision: str | None = None     # shorthand for model.precision=... (None: the exact model, fp32)


@dataclass
class PredictOptions:
    sources: list[str]
    weights: Path | str | None = None     # None: the default COCO-pretrained weights; a,b,c or ensemble.yaml: fused
    overrides: list[str] = field(default_factory=list)
    config_dir: Path | None = None
    out: Path | None = None               # None: runs/predict, numbered
    formats: list[str] = field(default_factory=lambda: ["json"])
    conf: str = str(PREDICT.conf)         # a score, or a thresholds.json: read by predict/runner.read_conf
    classes: str | None = None
    batch_size: int = PREDICT.batch_size
    every: int = 1
    draw: bool = True
    save_video: bool = False
    tile: int | None = None          # overlapping tiles of this many px for huge pictures
    overlap: float = PREDICT.tile_overlap
    device: str | None = None        # shorthand for device=...
    precision: str | None = None     # shorthand for model.precision=...
    tta: bool = False                # shorthand for model.tta=true


@dataclass
class ServeOptions:
    weights: Path | str | None = None
    overrides: list[str] = field(default_factory=list)
    config_dir: Path | None = None
    host: str = "127.0.0.1"          # this machine only: there is no authentication
    port: int = 8000
    conf: float = PREDICT.conf
    limits: ServeLimits = field(default_factory=ServeLimits)
    tta: bool = False                # shorthand for model.tta=true


@dataclass
class ExportOptions:
    weights: Path | str | None = None     # None: the default COCO-pretrained weights, as rcnn predict
    suffixes: list[str] = field(default_factory=lambda: [".onnx"])
    overrides: list[str] = field(default_factory=list)
    config_dir: Path | None = None
    out: Path | None = None
    images: list[str] | None = None
    input_dtype: str = "uint8"
    int8: bool = False      # also best.int8.onnx / best.int8.xml: the verified graphs quantized (export/int8.py)
    half: bool = False      # also best.fp16.torchscript: traced on the GPU with an fp16 backbone
    json_path: Path | None = None   # the report: each file written or refused, with its check's figures


@dataclass
class BenchmarkOptions:
    overrides: list[str] = field(default_factory=list)
    config_dir: Path | None = None
    weights: Path | None = None
    images: str | None = None
    count: int = 4
    batch: int = 4
    repeats: int = 3
    warmup: int = 1
    train: bool = True
    scaling: bool = False
    json_path: Path | None = None
    data_scale: str | None = None          # "1000,10000": the data-side benchmark instead
    load_scale: str | None = None          # "118287": annotation loading alone at these sizes (with data_scale or not)
    formats: str = ""                      # "onnx,openvino": also time exported files (benchmark/exported.py)
    profile: bool = False                  # instead: the stage profile (benchmark/profile.py)
