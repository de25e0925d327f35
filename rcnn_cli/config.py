"""Composes the shipped Hydra config tree (``rcnn_cli/conf``, also reachable as ``conf/``)."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError

CONF_DIR = Path(__file__).resolve().parent / "conf"


class ConfigError(ValueError):
    """A user's override or config that cannot be used; the message is one line for the user."""


def config_groups() -> dict[str, list[str]]:
    """Group name -> available options, e.g. {"model": ["mobilenet_v3_large_fpn", ...]}."""
    groups = {}
    for group in sorted(p for p in CONF_DIR.iterdir() if p.is_dir()):
        groups[group.name] = sorted(f.stem for f in group.glob("*.yaml") if not f.stem.startswith("_"))
    return groups


def load_config(overrides: Sequence[str] = (), config_dir: str | Path | None = None) -> DictConfig:
    """The resolved root config with ``key=value`` overrides applied.

    config_dir: a user's folder of extra configs (searched before the shipped ones).
    Raises ConfigError with one readable line when an override names no key or option.
    """
    overrides = list(overrides)
    if config_dir is not None:
        overrides.append(f"hydra.searchpath=[file://{Path(config_dir).resolve()}]")
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
            return compose(config_name="config", overrides=overrides)
    except (ConfigCompositionException, MissingConfigException, ConfigKeyError) as err:
        raise ConfigError(_explain(err, overrides)) from None


def model_config(name: str, **overrides) -> DictConfig:
    """The ``model`` group's preset ``name`` with keyword overrides merged in."""
    cfg = load_config([f"model={name}"]).model
    unknown = sorted(set(overrides) - set(cfg.keys()))
    if unknown:
        raise ConfigError(f"unknown model option(s) {', '.join(unknown)}; "
                          f"{_nearest_hint(unknown[0], list(cfg.keys()))}")
    return OmegaConf.merge(cfg, overrides)


def _explain(err: Exception, overrides: list[str]) -> str:
    """One line: what was wrong and the nearest valid choices."""
    text = str(err).strip().splitlines()[0]
    groups = config_groups()
    for override in overrides:
        key, _, value = override.lstrip("+~").partition("=")
        if key in groups and value not in groups[key]:
            return f"unknown {key} {value!r}; {_nearest_hint(value, groups[key])}"
    for override in overrides:
        key = override.lstrip("+~").partition("=")[0]
        if f"'{key}'" in text or key in text:
            parent, _, leaf = key.rpartition(".")
            keys = _keys_under(parent)
            return f"unknown config key {key!r}; {_nearest_hint(leaf, keys)}"
    return text


def _keys_under(parent: str) -> list[str]:
    try:
        node = load_config().get(parent) if parent else load_config()
    except ConfigError:
        return []
    return list(node.keys()) if isinstance(node, DictConfig) else []


def _nearest_hint(word: str, choices: list[str]) -> str:
    near = difflib.get_close_matches(word, choices, n=3, cutoff=0.5)
    if near:
        return "did you mean " + " or ".join(near) + "?"
    return "valid: " + ", ".join(choices)
