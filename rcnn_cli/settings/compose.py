"""Composes the shipped Hydra config tree (``rcnn_cli/conf``, also reachable as ``conf/``) from
group choices. Which settings win is decided in ``settings.resolve``, not here."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import DictConfig

from .schema import ConfigError

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"

__all__ = ["CONF_DIR", "compose_groups", "config_groups"]


def config_groups(config_dir: str | Path | None = None) -> dict[str, list[str]]:
    """Group name -> available options, e.g. {"model": ["mobilenet_v3_large_fpn", ...]}; a user's
    ``--config-dir`` adds its own options (``DIR/model/mine.yaml`` -> ``model=mine``)."""
    groups: dict[str, set[str]] = {}
    for root in [CONF_DIR] + ([Path(config_dir)] if config_dir else []):
        for group in (p for p in root.iterdir() if p.is_dir()) if root.is_dir() else ():
            names = {f.stem for f in group.glob("*.yaml") if not f.stem.startswith("_")}
            groups.setdefault(group.name, set()).update(names)
    return {name: sorted(options) for name, options in sorted(groups.items())}


def compose_groups(groups: Mapping[str, Any], config_dir: str | Path | None = None) -> DictConfig:
    """The root config with these group choices (``{"model": "resnet50_fpn"}``) and nothing else."""
    overrides = [f"{group}={value}" for group, value in groups.items()]
    if config_dir is not None:
        overrides.append(f"hydra.searchpath=[file://{Path(config_dir).resolve()}]")
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
            return compose(config_name="config", overrides=overrides)
    except (ConfigCompositionException, MissingConfigException) as err:
        raise ConfigError(str(err).strip().splitlines()[0]) from None

