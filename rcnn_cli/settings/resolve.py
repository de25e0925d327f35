"""The one rule that decides the settings of every command and of the Python API.

    shipped defaults (conf/)  <  the checkpoint's stored config  <  presets named on the command
    line (model=..., dataset=..., experiment=...)  <  key=value typed by the user

the last winning. ``rcnn train`` (fresh and ``resume=``), ``eval``, ``predict``, ``export``,
``benchmark``, ``config show`` and ``Detector.load`` all call ``resolve``; none merges settings its
own way. What the stored config brings depends on the command: a resumed run gets all of it (it is
the same run); the other commands get what describes the model and its data (``model``,
``dataset``, ``augment``, ``optim``) but run on this machine's trainer and device settings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import UnsupportedValueType

from ..errors import nearest_hint
from ..model.source import WeightsSource, weights_source
from .compose import compose_groups, config_groups
from .schema import ConfigError, check, not_a_config_type

# What a checkpoint's stored config gives a command that is not resuming the run.
STORED_SECTIONS = ("model", "dataset", "augment", "optim")
# Model keys a resumed run may change: they act at inference only, not on what is trained.
RUNTIME_MODEL_KEYS = ("precision", "box_score_thresh", "box_nms_thresh", "box_detections_per_img",
                      "rpn_pre_nms_top_n_test", "rpn_post_nms_top_n_test", "weights", "backbone_weights",
                      "box_nms_agnostic", "tta", "tta_scales")
# Commands that detect with model.tta=true (serve and the Python API resolve as predict); the others would ignore it.
TTA_COMMANDS = ("eval", "predict", "config")
# Commands that run an ensemble (serve and the Python API resolve as predict); the others take one weights file.
ENSEMBLE_COMMANDS = ("eval", "predict")
# Keys that, changed on resume, would not continue the run but start another one.
FIXED_ON_RESUME = ("optim.name", "dataset.format", "dataset.class_names", "dataset.name")
# rcnn eval scores as validation in training does, on trainer.accelerator: ``device`` follows it, so that
# the tiled path and the precision check run where the Lightning loop does.
EVAL_DEVICE = {"auto": "auto", "cpu": "cpu", "gpu": "cuda", "cuda": "cuda", "mps": "mps"}
# Presets whose weights have identical keys: the guess cannot tell them apart, the user can.
SAME_KEYS = {"mobilenet_v3_large_fpn": "a 320 px file has the same keys: add model=mobilenet_v3_large_320_fpn"}


@dataclass
class Settings:
    cfg: DictConfig                                   # the resolved config
    checkpoint: tuple[dict, dict] | None = None       # (state_dict, metadata) of the weights, read once
    notes: list[str] = field(default_factory=list)    # what the rule decided that the user should see
    typed: dict[str, Any] = field(default_factory=dict)   # what was typed (key=value, API keywords), dotted keys
    weights: WeightsSource | None = None              # what the weights argument names, decided once
    # an ensemble (weights.kind "ensemble"): each member's settings, by this same rule; the fields above
    # are then the first member's (the data, device and limits the ensemble runs with)
    members: list[Settings] = field(default_factory=list)


def resolve(command: str, overrides: Sequence[str] = (), values: Mapping[str, Any] | None = None,
            weights: str | Path | Sequence[str | Path] | WeightsSource | None = None,
            config_dir: str | Path | None = None, score_floor: float | None = None) -> Settings:
    """The settings ``command`` runs with.

    overrides: Hydra-style strings (``model=resnet50_fpn``, ``model.min_size=640``, ``+key=v``).
    values: the same as already-typed values (``{"model.min_size": [480, 512]}``, the Python API).
    weights: the checkpoint or weights file the command runs (eval, predict, export, the API), or an
        ensemble of them (``Settings.members``); for ``train`` the stored config comes from ``resume=``
        instead.
    score_floor: the lowest score the command shows (predict's and serve's --conf): the model keeps
        detections down to it (``_lower_score_floor``).
    """
    _check_config_dir(config_dir)
    groups, typed = _split(list(overrides), values or {}, config_dir)
    notes: list[str] = []
    resume = typed.get("resume") if command == "train" else None
    # What the weights argument names is decided here, once, and handed on as Settings.weights.
    source = _decided(resume or weights) if (resume or weights) else None
    if source is not None and source.kind == "ensemble":
        if resume:
            raise ConfigError(f"resume={resume}: names several weights files; resume one run's last.ckpt")
        if command not in ENSEMBLE_COMMANDS:
            raise ConfigError(f"--weights {source.given}: an ensemble runs in rcnn predict, eval and serve, not in "
                              f"{command}; name one of its files")
        return _resolve_ensemble(command, overrides, values, source, config_dir, score_floor)
    if isinstance(weights, WeightsSource):      # an ensemble's member, decided with the ensemble
        weights = weights.given
    typed_weights = typed.get("model.weights")
    for named in (source, weights_source(typed_weights) if typed_weights and not source else None):
        if named is not None and named.preset and "model" not in groups:
            groups["model"] = named.preset     # a name picks its preset too
    checkpoint, stored = _stored_config(source, command)
    if source and source.named:
        named = source.named
        notes.append(f"weights {named.name}: torchvision's COCO-trained {named.preset} (box AP {named.box_ap} on "
                     f"COCO val2017, 80 classes) from {named.path}")
    if stored is None and "model" not in groups and checkpoint and _guess_model(checkpoint):
        groups["model"] = _guess_model(checkpoint)
        notes.append(f"{Path(source.given).name} looks like model={groups['model']} (guessed from its keys; "
                     f"{SAME_KEYS.get(groups['model'], 'name another with model=...')})")
    cfg = compose_groups({**_stored_presets(stored, groups, config_dir, resume_all=bool(resume)), **groups},
                         config_dir)
    defaults = cfg.copy()
    if stored is not None:
        cfg = _layer_stored(cfg, stored, groups, config_dir, resume_all=bool(resume))
    if command in ("eval", "check") and "model.precision" not in typed:
        # eval reports the model's number, the same on every CPU: the exact model unless a fast path is asked
        # for; so does `data check --weights` rank label errors
        with open_dict(cfg):
            cfg.model.precision = "fp32"
    _apply(cfg, typed)
    if resume:
        notes += _resume_changes(stored, cfg, groups)
    if weights is not None:
        with open_dict(cfg):
            cfg.model.weights = str(weights)
    check(cfg, defaults)
    if command == "eval":
        _eval_device(cfg, typed)
    if command == "export":
        _export_on_the_cpu(cfg, typed)
    if cfg.model.tta and command not in TTA_COMMANDS:
        raise ConfigError(f"model.tta=true: test-time augmentation runs in rcnn eval, predict and serve (--tta), "
                          f"not in {command}")
    if score_floor is not None:
        _lower_score_floor(cfg, typed, score_floor, source)
    return Settings(cfg, checkpoint, notes, typed, source)


def exact_variant(settings: Settings) -> Settings:
    """``settings`` as ``resolve`` gives them with ``model.precision=fp32`` typed: the exact model that
    ``rcnn eval`` scores a fast path beside. Precision acts at inference only (RUNTIME_MODEL_KEYS), so
    nothing else the rule decided changes; the weights decided and read are handed on, not read again."""
    exact = {"model.precision": "fp32"}
    cfg = settings.cfg.copy()
    _apply(cfg, exact)
    check(cfg, settings.cfg)
    return Settings(cfg, settings.checkpoint, [], {**settings.typed, **exact}, settings.weights,
                    [exact_variant(member) for member in settings.members])


def _decided(weights: str | Path | Sequence[str | Path] | WeightsSource) -> WeightsSource:
    """An ensemble's members come decided (``WeightsSource.members``); anything else is decided here."""
    return weights if isinstance(weights, WeightsSource) else weights_source(weights)


def _resolve_ensemble(command: str, overrides: Sequence[str], values: Mapping[str, Any] | None,
                      source: WeightsSource, config_dir, score_floor: float | None) -> Settings:
    """Each member by this same rule with its own stored config (members may be different models), the
    same typed values for all; the ensemble runs on its first member's data, device and limits."""
    members = [resolve(command, overrides, values, weights=member, config_dir=config_dir, score_floor=score_floor)
               for member in source.members]
    first = members[0]
    return Settings(first.cfg, first.checkpoint, first.notes, first.typed, source, members)


def _eval_device(cfg: DictConfig, typed: Mapping[str, Any]) -> None:
    """eval's one device: trainer.accelerator's. A typed ``device`` would be a second answer: refused."""
    if device := {key.lstrip("+"): value for key, value in typed.items()}.get("device"):
        raise ConfigError(f"device={device}: rcnn eval runs where trainer.accelerator says, as validation in "
                          "training does; use trainer.accelerator=cpu (or gpu, auto)")
    with open_dict(cfg):
        cfg.device = EVAL_DEVICE[cfg.trainer.accelerator]


def _export_on_the_cpu(cfg: DictConfig, typed: Mapping[str, Any]) -> None:
    """export traces the exact fp32 model on the CPU: a typed device or precision it would not use is
    refused in one line rather than replaced."""
    plain = {key.lstrip("+"): value for key, value in typed.items()}
    for key, usable in (("device", ("cpu",)), ("model.precision", ("fp32", "auto"))):
        if key in plain and plain[key] not in usable:
            raise ConfigError(f"{key}={plain[key]}: rcnn export traces the exact fp32 model on the CPU (the file "
                              "then runs wherever its runtime does); --int8 adds a quantized twin, --half an fp16 "
                              "TorchScript traced on the GPU")
    with open_dict(cfg):
        cfg.device = "cpu"


def _lower_score_floor(cfg: DictConfig, typed: Mapping[str, Any], lowest_shown: float,
                       source: WeightsSource | None) -> None:
    """predict and serve never show detections under --conf, so the model may keep them down to that, never
    above its own model.box_score_thresh; unless that was typed. Exported files keep their own threshold."""
    if "model.box_score_thresh" in {key.lstrip("+") for key in typed} or (source and source.exported):
        return
    cfg.model.box_score_thresh = max(0.0, min(float(lowest_shown), float(cfg.model.box_score_thresh)))


def _check_config_dir(config_dir) -> None:
    """--config-dir adds presets from a folder; one that is not there would be silently ignored by Hydra."""
    if config_dir is None:
        return
    path = Path(config_dir)
    if not path.exists():
        raise ConfigError(f"--config-dir {config_dir}: no such folder (it holds model/, dataset/... preset folders)")
    if not path.is_dir():
        raise ConfigError(f"--config-dir {config_dir}: a file, not a folder (it holds model/, dataset/... preset "
                          "folders)")


def _split(overrides: list[str], values: Mapping[str, Any], config_dir=None) -> tuple[dict[str, str], dict[str, Any]]:
    """Group choices (``model=x``) apart from typed values (``model.min_size=640``), parsed as Hydra does."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if bare := [o for o in overrides if "=" not in o and not o.startswith("~")]:
        raise ConfigError(f"{bare[0]!r}: overrides are key=value, e.g. model.box_score_thresh=0.3")
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as err:  # hydra's parser errors are long; the first line says enough
        raise ConfigError(f"cannot parse overrides: {str(err).splitlines()[0]}") from None
    groups, typed = {}, {}
    known = config_groups(config_dir)
    for item in parsed:
        key = item.key_or_group
        if item.is_sweep_override():
            raise ConfigError(f"{item.input_line}: a sweep needs `rcnn train --multirun`")
        if key in known:
            value = item.value()
            if value not in known[key]:
                raise ConfigError(f"unknown {key} {value!r}; {nearest_hint(str(value), known[key])}")
            groups[key] = value
        else:
            typed[("+" if item.is_add() else "") + key] = item.value()
    for key, value in values.items():
        typed[key] = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
    return groups, typed


def _stored_config(source: WeightsSource | None, command: str) -> tuple[tuple | None, dict | None]:
    """(checkpoint, the stored config as a plain dict or None): the weights read, once."""
    if source is None or source.exported:
        return None, None
    from ..model.factory import read_weights_source

    path = Path(source.given)
    checkpoint = read_weights_source(source)
    meta = checkpoint[1]
    if not meta:
        if command == "train":
            raise ConfigError(f"resume={path}: not an rcnn checkpoint (no stored run); "
                              "to start from its weights use model.weights=")
        return checkpoint, None
    stored = dict(meta.get("config") or {})
    # The detector's own resolved model config (norm, class count and trainable stages decided
    # when it was built) describes the weights exactly; older checkpoints stored only this part.
    stored["model"] = {**(stored.get("model") or {}), **(meta.get("model") or {})}
    if meta.get("dataset") and not stored.get("dataset"):
        stored["dataset"] = meta["dataset"]
    return checkpoint, stored


def _stored_presets(stored: dict | None, groups: dict, config_dir, resume_all: bool) -> dict[str, str]:
    """The presets the stored run was composed from (its ``model.name``, ``dataset.name``...), so that
    its sections are laid over their own defaults, not over another preset's."""
    if stored is None:
        return {}
    known = config_groups(config_dir)
    sections = known if resume_all else STORED_SECTIONS
    return {section: stored[section]["name"] for section in sections
            if section not in groups and isinstance(stored.get(section), Mapping)
            and stored[section].get("name") in known.get(section, ())}


def _guess_model(checkpoint) -> str | None:
    if checkpoint is None:
        return None
    from ..model.weights import guess_model_name

    return guess_model_name(checkpoint[0])


def _layer_stored(cfg: DictConfig, stored: dict, groups: dict, config_dir, resume_all: bool) -> DictConfig:
    """Defaults < stored < named presets. Keys the stored config has that this version does not
    know (renamed since) are left out; keys it lacks (added since) keep their defaults."""
    sections = list(stored) if resume_all else [s for s in STORED_SECTIONS if s in stored]
    layer = {}
    for section in sections:
        if section in groups or section not in cfg:
            continue        # a preset named on the command line replaces the stored section
        node = stored[section]
        layer[section] = _known(node, cfg[section]) if isinstance(cfg[section], DictConfig) else node
    if resume_all and "model" in layer:
        layer["model"]["weights"] = None          # Lightning restores the weights themselves
        layer["model"]["backbone_weights"] = None
    merged = OmegaConf.merge(cfg, layer)
    if "experiment" in groups:                    # an experiment is a preset too: its values win
        merged = OmegaConf.merge(merged, _experiment_layer(groups, config_dir))
    return merged


def _known(node: Any, reference: DictConfig) -> dict:
    if not isinstance(node, Mapping):
        return node
    return {k: v for k, v in node.items() if k in reference}


def _experiment_layer(groups: dict, config_dir) -> dict:
    """What the named experiment sets: the keys where composing with it differs from without it."""
    with_it = OmegaConf.to_container(compose_groups(groups, config_dir), resolve=True)
    without = OmegaConf.to_container(compose_groups({k: v for k, v in groups.items() if k != "experiment"},
                                                    config_dir), resolve=True)
    return _difference(with_it, without)


def _difference(new: dict, old: dict) -> dict:
    out = {}
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(old.get(key), dict):
            inner = _difference(value, old[key])
            if inner:
                out[key] = inner
        elif key not in old or old[key] != value:
            out[key] = value
    return out


def _apply(cfg: DictConfig, typed: Mapping[str, Any]) -> None:
    """The user's key=value pairs, each naming an existing key (``+key=`` adds a new one inside a section,
    e.g. ``+trainer.max_steps=100``: a new top-level key is read by nothing, only stored in config.yaml)."""
    missing = object()
    for raw_key, value in typed.items():
        key = raw_key.lstrip("+")
        adds = raw_key.startswith("+") and "." in key and key.split(".")[0] in cfg
        if not adds and OmegaConf.select(cfg, key, default=missing) is missing:
            raise ConfigError(_unknown_key(cfg, key))
        with open_dict(cfg):
            try:
                OmegaConf.update(cfg, key, value, merge=False, force_add=True)
            except UnsupportedValueType:        # the Python API's values: a numpy number, an object
                raise ConfigError(not_a_config_type(key, value, OmegaConf.select(cfg, key, default=None))) from None


def _unknown_key(cfg: DictConfig, key: str) -> str:
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    choices = list(node.keys()) if isinstance(node, DictConfig) else list(cfg.keys())
    if parent and not isinstance(node, DictConfig):
        return f"unknown config key {key!r}; {nearest_hint(parent, list(cfg.keys()))}"
    return f"unknown config key {key!r}; {nearest_hint(leaf, [str(c) for c in choices])}"


def _resume_changes(stored: dict, cfg: DictConfig, groups: dict) -> list[str]:
    """One clear error for a change that cannot continue the run; a note for each that can."""
    now = OmegaConf.to_container(cfg, resolve=True)
    changes = []
    for key, old, new in _changed(stored, now):
        section, _, leaf = key.partition(".")
        if key in FIXED_ON_RESUME or (section == "model" and leaf not in RUNTIME_MODEL_KEYS):
            raise ConfigError(f"cannot resume with {key}={new!r}: the run was trained with {old!r}; "
                              "to train another way from these weights, start a new run with "
                              f"model.weights={cfg.resume}")
        if section not in ("resume", "run_dir", "name") and leaf not in ("weights", "backbone_weights"):
            changes.append(f"{key}: {old!r} -> {new!r}")
    return [f"resume changes {', '.join(changes)}"] if changes else []


def _changed(old: Any, new: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        out = []
        for key in new:
            if key in old:
                out += _changed(old[key], new[key], f"{prefix}{key}.")
        return out
    return [] if old == new else [(prefix.rstrip("."), old, new)]


def load_config(overrides: Sequence[str] = (), config_dir: str | Path | None = None) -> DictConfig:
    """The resolved config of a fresh run with ``key=value`` overrides (``settings.resolve``'s rule)."""
    return resolve("config", overrides, config_dir=config_dir).cfg


def model_config(name: str, **overrides: Any) -> DictConfig:
    """The ``model`` preset ``name`` with keyword overrides (``min_size=512``) applied by the same rule."""
    return resolve("config", [f"model={name}"], {f"model.{k}": v for k, v in overrides.items()}).cfg.model
