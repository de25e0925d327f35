"""Shared test helpers: where the real data is, the tiny experiment, and the command line in a
subprocess. Real data is read from ../shared/datasets (never copied into the repo)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("RCNN_SHARED", ROOT.parent / "shared"))
DATASETS = SHARED / "datasets"
BCCD = DATASETS / "bccd-voc" / "BCCD"
FACEMASK = DATASETS / "facemask-coco"

# The tiny experiment (conf/experiment/tiny.yaml): one epoch on 48 synthetic images in ~20 s.
TINY_TRAIN = ["experiment=tiny"]


def require_shared() -> Path:
    """The shared datasets folder; skips the test when it is absent, except in CI, where the
    tests that need real data must run."""
    if not DATASETS.is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but the shared datasets are missing at {DATASETS}")
        pytest.skip(f"shared datasets not found at {DATASETS} (set RCNN_SHARED)")
    return DATASETS


def bccd_images(n: int) -> list[Path]:
    require_shared()
    return sorted((BCCD / "JPEGImages").glob("*.jpg"))[:n]


def facemask_images(n: int) -> list[Path]:
    require_shared()
    return sorted((FACEMASK / "val2017").iterdir())[:n]


def compose(*overrides: str, weights=None, command: str = "config"):
    """The settings a command would run with, in-process (``settings.resolve``)."""
    from rcnn_cli.settings import resolve

    return resolve(command, list(overrides), weights=weights).cfg


def run_rcnn(*args: str, cwd: Path):
    """The real command line, in a subprocess with one torch thread."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "rcnn_cli.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)   # a hung run fails the test, not CI
