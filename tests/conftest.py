"""Shared fixtures. Real data is read from ../shared/datasets (never copied into the repo)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RCNN_SHARED", ROOT.parent / "shared"))
DATASETS = SHARED / "datasets"
BCCD = DATASETS / "bccd-voc" / "BCCD"
FACEMASK = DATASETS / "facemask-coco"

# Tests run two to a 2-core machine (pytest -n 2): one torch thread each avoids oversubscription.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


def require_shared() -> Path:
    """The shared datasets folder; skips the test when it is absent, except in CI, where the
    tests that need real data must run."""
    if not DATASETS.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but the shared datasets are missing at {DATASETS}")
        pytest.skip(f"shared datasets not found at {DATASETS} (set RCNN_SHARED)")
    return DATASETS


@pytest.fixture
def shared_datasets() -> Path:
    return require_shared()


@pytest.fixture
def bccd_root() -> Path:
    require_shared()
    return BCCD


@pytest.fixture
def facemask_root() -> Path:
    require_shared()
    return FACEMASK


def bccd_images(n: int) -> list[Path]:
    require_shared()
    return sorted((BCCD / "JPEGImages").glob("*.jpg"))[:n]


def facemask_images(n: int) -> list[Path]:
    require_shared()
    return sorted((FACEMASK / "val2017").iterdir())[:n]


# A tiny shapes model trained for one epoch through the real CLI, shared by the CLI tests.
TINY_TRAIN = ["dataset.num_images=48", "dataset.image_size=128", "model.min_size=128", "model.max_size=128",
              "model.fpn_channels=64", "model.rpn_post_nms_top_n_train=200", "model.rpn_post_nms_top_n_test=100",
              "model.box_batch_size_per_image=64", "model.representation_size=128",
              "dataset.batch_size=4", "dataset.num_workers=0", "trainer.accelerator=cpu",
              "optim=adamw", "optim.lr=0.001"]


def run_rcnn(*args: str, cwd: Path):
    """The real command line, in a subprocess with one torch thread."""
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "rcnn_cli.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)   # a hung run fails the test, not CI


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """runs/tiny of a scratch working dir after one epoch of training; returns the run folder."""
    work = tmp_path_factory.mktemp("work")
    out = run_rcnn("train", *TINY_TRAIN, "trainer.max_epochs=1", "run_dir=runs/tiny", cwd=work)
    assert out.returncode == 0, out.stderr[-3000:]
    return work / "runs" / "tiny"
