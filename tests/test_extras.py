"""The core install runs train, eval and predict; export, serve, tune and the trackers are extras, and a
command whose extra is missing says which one in one line. The extras are hidden from a real ``rcnn``
process (an import hook that makes them unimportable, as in a venv without them) rather than
installing a second venv, which would need torch again."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import tomllib
from helpers import ROOT, TINY_TRAIN, tiny_images

from rcnn_cli.errors import EXTRAS

# Each extra's distributions (pyproject.toml) and the modules they install, written out by hand.
MODULES_OF = {"onnx": ["onnx"], "onnxruntime": ["onnxruntime"], "onnxscript": ["onnxscript"],
              "openvino": ["openvino"], "nncf": ["nncf"], "fastapi": ["fastapi"], "uvicorn": ["uvicorn"],
              "python-multipart": ["multipart", "python_multipart"], "optuna": ["optuna"],
              "optuna-integration": ["optuna_integration"], "mlflow": ["mlflow"], "wandb": ["wandb"]}

# None in sys.modules is how Python spells "not importable": `import x` raises ModuleNotFoundError and
# importlib.util.find_spec("x") answers None, as for a package that is not installed.
HIDE = '''
import sys

for name in sys.argv[1].split(","):
    sys.modules[name] = None
sys.argv = ["rcnn", *sys.argv[2:]]
from rcnn_cli.cli import main
main()
'''


def extras_in_pyproject() -> dict[str, str]:
    """module -> extra, from pyproject.toml (``all`` and ``dev`` only gather the others)."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    found = {}
    for extra, requirements in extras.items():
        if extra in ("all", "dev"):
            continue
        for requirement in requirements:
            name = requirement.split(">")[0].split("=")[0].split("[")[0].strip()
            for module in MODULES_OF[name]:
                found[module] = extra
    return found


def test_the_missing_extra_table_matches_pyproject():
    assert EXTRAS == extras_in_pyproject()


def rcnn_without_extras(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", HIDE, ",".join(EXTRAS), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)


def test_core_install_trains_evaluates_and_predicts(tmp_path):
    train = rcnn_without_extras("train", *TINY_TRAIN, "run_dir=runs/core", cwd=tmp_path)
    assert train.returncode == 0, train.stderr[-3000:]
    ckpt = str(tmp_path / "runs" / "core" / "checkpoints" / "best.ckpt")
    evaluate = rcnn_without_extras("eval", "--weights", ckpt, "--out", "eval", cwd=tmp_path)
    assert evaluate.returncode == 0, evaluate.stderr[-3000:]
    assert (tmp_path / "eval" / "metrics.json").is_file() or any((tmp_path / "eval").iterdir())
    predict = rcnn_without_extras("predict", str(tiny_images(1)[0]), "--weights", ckpt, "--out", "pred",
                                  cwd=tmp_path)
    assert predict.returncode == 0, predict.stderr[-3000:]
    assert (tmp_path / "pred" / "predictions.json").is_file()

    export = rcnn_without_extras("export", "--weights", ckpt, "--out", "m.onnx", cwd=tmp_path)
    assert export.returncode == 2
    assert export.stderr.strip().splitlines() == [
        "error: this needs onnx, which is not installed: pip install 'rcnn-cli[export]'"] or \
        "pip install 'rcnn-cli[export]'" in export.stderr.strip().splitlines()[-1]
    assert "Traceback" not in export.stderr
    assert not (tmp_path / "m.onnx").exists()
