"""Shared fixtures; helper functions live in tests/helpers."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch
from helpers import BCCD, FACEMASK, TINY_TRAIN, require_shared, run_rcnn

# Auto precision decisions are cached per weights file and machine (inference/precision.py): the tests keep
# theirs in a folder of their own, never in the user's cache.
os.environ.setdefault("RCNN_CACHE_DIR", str(Path(tempfile.gettempdir()) / f"rcnn-tests-cache-{os.getpid()}"))

# The suite states the hardware it assumes, so that every machine runs the same branches and a CI result does
# not depend on which CPU it lands on: AVX2-only by default, and the tests of the bf16-native branches override
# it themselves (hardware.override("amx"); RCNN_HARDWARE in subprocesses).
os.environ.setdefault("RCNN_HARDWARE", "avx2")

# `model.precision=auto` may compile an OpenVINO model from a checkpoint on first use (export/compiled.py), which
# costs tens of seconds per checkpoint and settings: off for the suite, on in the tests of that path.
os.environ.setdefault("RCNN_AUTO_OPENVINO", "off")

# Tests run two to a 2-core machine (pytest -n 2): one torch thread each avoids oversubscription.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


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


@pytest.fixture
def tiny_cfg():
    """The tiny experiment's config, composed in-process as ``rcnn train experiment=tiny`` would."""
    from helpers import compose

    return compose(*TINY_TRAIN)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """runs/tiny of a scratch working dir after one epoch of training; returns the run folder."""
    work = tmp_path_factory.mktemp("work")
    out = run_rcnn("train", *TINY_TRAIN, "run_dir=runs/tiny", cwd=work)
    assert out.returncode == 0, out.stderr[-3000:]
    return work / "runs" / "tiny"
