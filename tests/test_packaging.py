"""A non-editable install (the wheel) carries the config tree and the `rcnn` command."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest
from helpers import ROOT


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Built from a copy of what a source distribution holds: an in-tree build would write build/ and
    rcnn_cli.egg-info into the checkout while the other test worker imports from it."""
    import shutil

    source, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("wheel")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "rcnn_cli", source / "rcnn_cli", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "-w", str(out), str(source)], check=True, stdin=subprocess.DEVNULL, capture_output=True)
    return next(out.glob("rcnn_cli-*.whl"))


def test_wheel_ships_every_config(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {str(p.relative_to(ROOT / "rcnn_cli")) for p in (ROOT / "rcnn_cli" / "conf").rglob("*.yaml")}
    assert shipped and {f"rcnn_cli/{p}" for p in shipped} <= names
    assert any(n.endswith("entry_points.txt") for n in names)


def test_installed_command_finds_configs_from_another_directory(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    scratch_site = next(env_dir.glob("lib/python*/site-packages"))
    # Dependencies come from the project venv (a path entry, so its editable hook stays off).
    (scratch_site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(env_dir / "bin" / "python"), "install",
                    "--quiet", "--no-deps", str(wheel)], check=True, stdin=subprocess.DEVNULL, capture_output=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run([str(env_dir / "bin" / "python"), "-c", "import rcnn_cli; print(rcnn_cli.__file__)"],
                           cwd=elsewhere, capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(scratch_site))
    shown = subprocess.run([str(env_dir / "bin" / "rcnn"), "config", "show", "model=vgg16"],
                           cwd=elsewhere, capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    assert "backbone: vgg16" in shown.stdout and "roi_pool: roipool" in shown.stdout
