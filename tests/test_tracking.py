"""Experiment tracking (issue 19): `logger=mlflow` against a real MLflow tracking server started on the
loopback address by the test, and the local file store; `logger=wandb` offline; a missing package is
one line."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import TINY_TRAIN

from rcnn_cli.commands import train
from rcnn_cli.errors import UsageError
from rcnn_cli.settings.resolve import resolve

QUICK = [*TINY_TRAIN, "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    """`mlflow server` on 127.0.0.1 with a sqlite store; stopped after the test."""
    pytest.importorskip("mlflow")
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
         "--artifacts-destination", str(tmp_path / "artifacts")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "MLFLOW_SERVER_ALLOWED_HOSTS": "*"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if server.poll() is not None:
                pytest.fail("mlflow server exited: " + server.stderr.read().decode()[-2000:])
            time.sleep(0.5)
    yield url
    server.terminate()
    server.wait(timeout=30)


def check_run(tracking_uri: str, experiment: str, run_dir: Path) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.data.params["dataset.name"] == "shapes" and run.data.params["optim.name"] == "adamw"
    assert run.data.params["model.min_size"] == "128"
    assert "val/map" in run.data.metrics and "train/loss_epoch" in run.data.metrics
    artefacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"metrics.png", "config.yaml", "best.ckpt"} <= artefacts
    assert (run_dir / "metrics.csv").is_file()


def test_mlflow_server_on_loopback_gets_params_metrics_and_artefacts(mlflow_server, tmp_path):
    run_dir = tmp_path / "runs" / "m"
    train.run(train.TrainOptions([*QUICK, "logger=mlflow", f"logger.tracking_uri={mlflow_server}",
                                  "logger.experiment=tiny", f"run_dir={run_dir}"]))
    check_run(mlflow_server, "tiny", run_dir)


def test_mlflow_file_store_by_default(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "runs" / "f"
    train.run(train.TrainOptions([*QUICK, "logger=mlflow", f"run_dir={run_dir}", f"data_root={Path.cwd()}/data"]))
    check_run(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}", "rcnn", run_dir)


def test_a_missing_tracking_package_is_one_line(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    from rcnn_cli.training.loggers import build_loggers

    cfg = resolve("train", ["logger=wandb"]).cfg
    with pytest.raises(UsageError, match=r"logger=wandb needs the wandb package: pip install 'rcnn-cli\[wandb\]'"):
        build_loggers(cfg, Path("unused"))


def test_wandb_offline_keeps_the_run_with_its_config_metrics_and_files(tmp_path, monkeypatch):
    """WANDB_MODE=offline: everything lands in <run>/wandb/offline-run-*, nothing goes over the network."""
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    run_dir = tmp_path / "runs" / "w"
    train.run(train.TrainOptions([*QUICK, "logger=wandb", "logger.project=tiny", f"run_dir={run_dir}"]))
    offline = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 1
    files = offline[0] / "files"
    assert "shapes" in (files / "config.yaml").read_text()                       # the resolved config
    assert {"metrics.png", "config.yaml", "best.ckpt"} <= {p.name for p in files.iterdir()}
    history = (offline[0] / f"run-{offline[0].name.rsplit('-', 1)[-1]}.wandb").stat().st_size
    assert history > 1000                                                           # the logged metrics
