"""Types and allowed values of the config keys. Defaults live once, in ``conf/``; this module only
says what a value may be, so that a typo is one line naming the nearest valid choice instead of a
silently built default.

A key listed in ``RULES`` is checked against its rule; any other key must keep the type of its
default (an int where the default is an int, a list where it is a list; ints pass for floats).
A key whose default is ``null`` must be listed here (``tests/test_settings.py`` checks that every
key of every preset of every group is covered one way or the other).
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from ..errors import UsageError

# Integers reach torch, numpy and Lightning, which hold them in 64 bits: a larger one overflows there.
INT64 = 2**63


NO_LEARNING = "a learning rate of 0 trains nothing"


class ConfigError(UsageError, ValueError):
    """A user's override or config that cannot be used; the message is one line for the user."""


@dataclass(frozen=True)
class Rule:
    types: tuple[type, ...]                  # accepted Python types (after YAML parsing)
    choices: tuple[Any, ...] = ()            # allowed values, when the set is closed
    nullable: bool = False
    low: float | None = None                 # inclusive bounds for numbers
    high: float | None = None
    why: str = ""                            # said after a value out of bounds, when the bound is not obvious
    item_types: tuple[type, ...] = ()        # a list's items, when they must be of these types
    min_items: int = 0                       # a list's shortest length
    above: float | None = None               # exclusive lower bound (a rate that must not be 0)

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is not allowed, or None. NaN and infinity never are: every number here is
        a size, count, rate or fraction, and YAML's .nan/.inf would pass the bounds checks (NaN
        compares false with everything) only to fail inside the optimiser or the model. Nor is a
        number past what its consumer holds: an integer beyond 64 bits, or one too large for a float
        where a float is read. A rule that takes a list of its scalars (``model.min_size``) takes a
        non-empty one, of those scalars only."""
        if value is None:
            return None if self.nullable else "must be set"
        if isinstance(value, bool) and bool not in self.types:
            return f"must be {_describe(self.types)}"
        if not isinstance(value, self.types):
            return f"must be {_describe(self.types)}"
        if self.choices and value not in self.choices:
            return "must be one of " + ", ".join(map(str, self.choices))
        scalars = tuple(t for t in self.types if t is not list)
        if isinstance(value, list) and scalars and len(scalars) < len(self.types):
            if not value or any(isinstance(v, bool) or not isinstance(v, scalars) for v in value):
                return f"must be {_describe(scalars)} or a non-empty list of them"
        if isinstance(value, list) and (problem := self._list_problem(value)):
            return problem
        numbers = [value] if isinstance(value, (int, float)) else (value if isinstance(value, list) else [])
        for number in numbers:
            if isinstance(number, bool) or not isinstance(number, (int, float)):
                continue
            if not _holds(number, float in self.types):
                return "must be a finite number" if float in self.types else (
                    f"must be at most {INT64 - 1}" if number > 0 else f"must be at least {-INT64}")
            if self.above is not None and number <= self.above:
                return f"must be above {self.above:g}" + (f" ({self.why})" if self.why else "")
            if (self.low is not None and number < self.low) or (self.high is not None and number > self.high):
                return self._bounds() + (f" ({self.why})" if self.why else "")
        return None

    def expected(self) -> str:
        """What a value of this rule must be, in words (for values that are not even of a type)."""
        return f"must be {_describe(self.types)}" + (" or null" if self.nullable else "")

    def _list_problem(self, items: list) -> str | None:
        if len(items) < self.min_items:
            return f"must list at least {self.min_items} value" + ("s" if self.min_items > 1 else "")
        if self.item_types and any(isinstance(i, bool) or not isinstance(i, self.item_types) for i in items):
            plural = {int: "integers", float: "numbers", str: "strings"}
            kinds = ["numbers"] if float in self.item_types else [plural[t] for t in self.item_types]
            return "must be a list of " + " or ".join(kinds)
        return None

    def _bounds(self) -> str:
        return f"must be at least {self.low}" if self.high is None else f"must be in [{self.low}, {self.high}]"


def _holds(number: int | float, as_float: bool) -> bool:
    """Whether ``number`` reaches its consumer intact: a finite float, or an int that fits 64 bits (one
    read as a float must also convert to a finite one)."""
    if isinstance(number, float):
        return math.isfinite(number)
    if as_float:
        try:
            return math.isfinite(float(number))
        except OverflowError:
            return False
    return -INT64 <= number < INT64


def _describe(types: tuple[type, ...]) -> str:
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string", list: "a list",
             dict: "a mapping"}
    return " or ".join(names.get(t, t.__name__) for t in types)


INT, FLOAT, TEXT, LIST = (int,), (int, float), (str,), (list,)
FRACTION = Rule(FLOAT, low=0.0, high=1.0)

RULES: dict[str, Rule] = {
    # model: architecture
    "model.backbone": Rule(TEXT, ("resnet18_fpn", "resnet50_fpn", "resnet50_fpn_v2", "mobilenet_v3_large_fpn",
                                  "vgg16")),
    "model.num_classes": Rule(INT, nullable=True, low=2),
    "model.weights": Rule(TEXT, nullable=True),
    "model.backbone_weights": Rule(TEXT, nullable=True),
    "model.trainable_backbone_layers": Rule(INT, nullable=True, low=0, high=6),
    "model.norm": Rule(TEXT, ("auto", "frozen_bn", "bn")),
    "model.precision": Rule(TEXT, ("auto", "fp32", "bf16", "int8")),
    # a list: multi-scale training (one drawn per batch); the coarsest feature map is 1/32 of the picture
    "model.min_size": Rule((int, list), low=32), "model.max_size": Rule(INT, low=32),
    "model.rpn_objectness": Rule(TEXT, ("sigmoid", "softmax")),
    "model.roi_pool": Rule(TEXT, ("roialign", "roipool")),
    "model.box_head": Rule(TEXT, ("two_mlp", "conv_fc")),
    "model.rpn_nms_thresh": FRACTION, "model.box_nms_thresh": FRACTION,
    "model.rpn_fg_iou_thresh": FRACTION, "model.rpn_bg_iou_thresh": FRACTION,
    "model.box_fg_iou_thresh": FRACTION, "model.box_bg_iou_thresh": FRACTION,
    "model.rpn_positive_fraction": FRACTION, "model.box_positive_fraction": FRACTION,
    "model.box_score_thresh": FRACTION, "model.rpn_score_thresh": FRACTION,
    "model.box_detections_per_img": Rule(INT, low=1),
    # factors of min_size; past 4x a 800 px model would run at 3,200 px
    "model.tta_scales": Rule(LIST, low=0.25, high=4.0, item_types=FLOAT, min_items=1),
    # dataset
    "dataset.format": Rule(TEXT, ("voc", "coco", "yolo", "shapes")),
    "dataset.class_names": Rule(LIST, nullable=True),
    "dataset.root": Rule((str, list), nullable=True),   # a list of VOC roots: 07+12
    "dataset.val_fraction": FRACTION,
    "dataset.batch_size": Rule(INT, low=1),
    "dataset.folds": Rule(INT, nullable=True, low=2, why="cross-validation needs at least 2 folds"),   # null: off
    "dataset.fold": Rule(INT, nullable=True, low=1),       # null: every fold (rcnn train), else that one
    "dataset.repeat_factor_thresh": Rule(FLOAT, nullable=True, low=0.0, high=1.0),   # null: no repeats
    "dataset.tile": Rule(INT, nullable=True, low=32),                # null: whole images, no tiles
    "dataset.tile_overlap": Rule(FLOAT, low=0.0, high=0.9),          # tile_windows needs < 1
    "dataset.tile_min_visibility": FRACTION, "dataset.tile_empty_share": FRACTION,
    # the rest of the config
    "optim.name": Rule(TEXT, ("sgd", "adamw")),
    "optim.schedule": Rule(TEXT, ("multistep", "cosine", "constant")),
    "optim.lr": Rule(FLOAT, nullable=True, above=0, why=NO_LEARNING),      # null: base_lr scaled by the batch
    "optim.base_lr": Rule(FLOAT, above=0, why=NO_LEARNING),
    "trainer.max_epochs": Rule(INT, low=1, why="the learning-rate schedule is spread over the whole run, so it needs "
                               "an end: Lightning's -1, no limit, cannot be used"),
    "trainer.precision": Rule(TEXT, ("auto", "32-true", "bf16-mixed", "16-mixed", "32", "bf16", "16")),
    "trainer.accelerator": Rule(TEXT, ("auto", "cpu", "gpu", "cuda", "mps")),
    "trainer.gradient_clip_val": Rule(FLOAT, nullable=True, low=0.0),
    # a fraction of the batches or a count, for quick tries
    "trainer.limit_train_batches": Rule(FLOAT, nullable=True, low=0.0),
    "trainer.limit_val_batches": Rule(FLOAT, nullable=True, low=0.0),
    "callbacks.checkpoint.mode": Rule(TEXT, ("max", "min")),
    "callbacks.early_stopping.patience": Rule(INT, nullable=True, low=0),
    "callbacks.ema.decay": Rule(FLOAT, nullable=True, low=0.0, high=1.0),
    "augment.hflip": FRACTION, "augment.scale_p": FRACTION, "augment.min_visibility": FRACTION,
    "augment.color_jitter": FRACTION,                     # brightness, contrast, saturation; hue a tenth of it
    "augment.scale": Rule(LIST, nullable=True, low=0.0),  # [low, high] zoom of the content; null: off
    "augment.crop": Rule((dict,), nullable=True),          # {size, scale} random-resized crop; null: off
    "augment.crop.size": Rule(INT, low=1), "augment.crop.scale": Rule(LIST, low=0.0, high=1.0),
    "augment.seed": Rule(INT, nullable=True),             # null: the run's seed
    "logger.name": Rule(TEXT, ("tensorboard", "csv", "mlflow", "wandb")),
    "logger.tracking_uri": Rule(TEXT, nullable=True),
    "logger.entity": Rule(TEXT, nullable=True),
    "tune.pruner": Rule(TEXT, ("median", "threshold", "none")),
    "tune.direction": Rule(TEXT, ("maximize", "minimize")),
    "tune.trials": Rule(INT, low=1),
    "tune.prune_below": Rule(FLOAT, nullable=True),
    # top-level keys
    "seed": Rule(INT),
    "data_root": Rule(TEXT), "runs_root": Rule(TEXT),
    "name": Rule(TEXT, nullable=True), "run_dir": Rule(TEXT, nullable=True), "resume": Rule(TEXT, nullable=True),
}
# Keys whose default is null and whose value is free text or a path (nothing more to check).
FREE = ("dataset.name", "dataset.train_split", "dataset.val_split", "dataset.test_split", "dataset.images",
        "dataset.annotations", "dataset.train_json", "dataset.train_images", "dataset.val_json",
        "dataset.val_images", "dataset.test_json", "dataset.test_images")
for _key in FREE:
    RULES.setdefault(_key, Rule(TEXT, nullable=True))


def check(cfg: DictConfig, defaults: DictConfig) -> None:
    """Raises ConfigError for the first value, in any section or at the top level, that breaks its rule.

    defaults: the same config before the user's values, for keys typed by their default.
    """
    plain_defaults = dict(leaves(OmegaConf.to_container(defaults, resolve=True)))
    try:
        plain = OmegaConf.to_container(cfg, resolve=True)
    except InterpolationResolutionError as err:
        raise ConfigError(_unresolved(cfg, err, plain_defaults)) from None
    for key, value in leaves(plain):
        if key in SPECIAL:
            SPECIAL[key](value)
            continue
        rule = rule_for(key, plain_defaults.get(key))
        if rule is None:
            continue
        problem = rule.problem(value)
        if problem:
            near = _nearest(str(value), [str(c) for c in rule.choices]) if rule.choices else ""
            raise ConfigError(f"{key}={value!r}: {problem}" + (f" (did you mean {near}?)" if near else ""))


def rule_for(key: str, default: Any = None) -> Rule | None:
    """The key's rule: listed in RULES, or the type of its default (None: a null default, nothing to check)."""
    if key in RULES:
        return RULES[key]
    if default is None:
        return None
    return Rule((int, float) if isinstance(default, float) else (type(default),))


def _unresolved(cfg: DictConfig, err: InterpolationResolutionError, defaults: dict[str, Any]) -> str:
    """``${...}`` that names no key or unset variable, as one line naming the key that holds it."""
    key = err.full_key or "?"
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    written = OmegaConf.to_container(node, resolve=False).get(leaf) if isinstance(node, DictConfig) else None
    rule = rule_for(key, defaults.get(key))
    reason = str(err).splitlines()[0]
    return f"{key}={written!r}: {reason}; " + (rule.expected() if rule else "it must name an existing key")


def not_a_config_type(key: str, value: Any, default: Any) -> str:
    """A Python API value OmegaConf cannot hold (a numpy number, an object), as one line with the plain
    value to pass instead when there is one."""
    default = OmegaConf.to_container(default) if OmegaConf.is_config(default) else default
    rule = rule_for(key, default)
    plain = value.tolist() if callable(getattr(value, "tolist", None)) else None
    return (f"{key}={' '.join(repr(value).split())}: {type(value).__name__} is not a config type; "
            + (rule.expected() if rule else "must be a number, string, true/false, list or null")
            + (f" (pass {plain!r})" if plain is not None else ""))


def check_value(key: str, value: Any) -> None:
    if key == "device" and not (value in ("auto", "cpu", "cuda", "mps") or str(value).startswith("cuda:")):
        raise ConfigError(f"device={value!r}: must be auto (the GPU when there is one), cpu, cuda or cuda:N")


def _check_num_workers(value: Any) -> None:
    if value != "auto" and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
        raise ConfigError(f"dataset.num_workers={value!r}: must be auto or an integer of at least 0")


def _check_devices(value: Any) -> None:
    """As Lightning reads ``devices``: a count, -1 (all), auto, "0,1" or a list of indices."""
    counts = isinstance(value, int) and not isinstance(value, bool) and value >= -1
    indices = isinstance(value, list) and value and all(isinstance(v, int) and v >= 0 for v in value)
    text = isinstance(value, str) and (value == "auto" or re.fullmatch(r"-1|\d+(,\d+)*,?", value.strip()))
    if not (counts or indices or text):
        raise ConfigError(f"trainer.devices={value!r}: must be a count, -1 (all), auto or a list of indices")


# Keys whose allowed values are not one type with bounds or choices.
SPECIAL = {"device": lambda value: check_value("device", value), "dataset.num_workers": _check_num_workers,
           "trainer.devices": _check_devices}


def leaves(plain: dict, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every setting of a plain config; a mapping with a rule of its own
    (``augment.crop``) is a setting too, and its keys are."""
    for key, value in plain.items():
        path = f"{prefix}{key}"
        if not isinstance(value, dict) or path in RULES:
            yield path, value
        if isinstance(value, dict):
            yield from leaves(value, f"{path}.")


def _nearest(word: str, choices: list[str]) -> str:
    return " or ".join(difflib.get_close_matches(word, choices, n=2, cutoff=0.4))

