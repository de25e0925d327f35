"""Experiment tracking from the ``logger`` config group: metrics.csv always (metrics.png is drawn from
it), plus TensorBoard, MLflow or Weights & Biases. The resolved config goes in as hyper-parameters;
at the end metrics.png, config.yaml and best.ckpt go in as artifacts."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger, Logger, MLFlowLogger, TensorBoardLogger, WandbLogger
from omegaconf import DictConfig, OmegaConf

from ..errors import UsageError

EXTRAS = {"mlflow": "mlflow", "wandb": "wandb"}     # logger name -> package (and the pip extra of that name)


def build_loggers(cfg: DictConfig, run_dir: Path) -> list[Logger]:
    logger = cfg.logger
    loggers: list[Logger] = [CSVLogger(run_dir, name="", version="")]
    package = EXTRAS.get(logger.name)
    if package and importlib.util.find_spec(package) is None:
        raise UsageError(f"logger={logger.name} needs the {package} package: pip install 'rcnn-cli[{package}]'")
    if logger.name == "tensorboard":
        loggers.append(TensorBoardLogger(run_dir, name="tensorboard", version="", default_hp_metric=False))
    elif logger.name == "mlflow":
        uri = logger.tracking_uri or local_mlflow_store()
        loggers.append(MLFlowLogger(experiment_name=logger.experiment, run_name=run_dir.name, tracking_uri=uri))
    elif logger.name == "wandb":
        loggers.append(WandbLogger(project=logger.project, entity=logger.entity, name=run_dir.name,
                                   save_dir=str(run_dir)))
    hyperparameters = flat(OmegaConf.to_container(cfg, resolve=True))
    for each in loggers[1:]:
        each.log_hyperparams(hyperparameters)
    return loggers


def local_mlflow_store() -> str:
    """./mlruns/mlflow.db (artifacts beside it in ./mlruns): MLflow 3 keeps its plain-file store in
    maintenance mode and refuses it by default, so the local store is a sqlite file."""
    folder = Path("mlruns").resolve()
    folder.mkdir(exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}"


def flat(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"model": {"min_size": 800}} -> {"model.min_size": 800}: one tracked parameter per key."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value if isinstance(value, (int, float, str, bool)) or value is None else str(value)
    return out


def finish_tracking(loggers: list[Logger], files: list[Path]) -> None:
    """The run's files into each tracker that keeps files (MLflow artifacts, W&B run files), then close
    the W&B run (Lightning leaves it open; offline, its history is only complete once closed)."""
    files = [f for f in files if f.is_file()]
    for logger in loggers:
        if isinstance(logger, MLFlowLogger):
            for path in files:
                logger.experiment.log_artifact(logger.run_id, str(path))
        elif isinstance(logger, WandbLogger):
            for path in files:
                logger.experiment.save(str(path), base_path=str(path.parent), policy="now")
            logger.experiment.finish()
