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
