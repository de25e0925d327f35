"""One base class for every error the user should see as one line instead of a traceback.

Commands raise; ``rcnn_cli.cli.main`` prints ``error: <message>`` once and exits with the error's
code: 2 for usage and configuration (the command line or the files it names must change), 1 for
a job that started and failed.
"""

from __future__ import annotations

import difflib


class RcnnError(Exception):
    """An error with a one-line message for the user and the exit code it ends the command with."""

    exit_code = 2


class UsageError(RcnnError):
    """A wrong option, value or file on the command line."""


class JobFailed(RcnnError):
    """The job ran and failed (diverged, out of memory, an export that disagreed with torch)."""

    exit_code = 1


def nearest_hint(word: str, choices: list[str]) -> str:
    """The end of every "wrong value" line: the nearest valid choices, or all of them."""
    near = difflib.get_close_matches(word, choices, n=3, cutoff=0.5)
    if near:
        return "did you mean " + " or ".join(near) + "?"
    return "valid: " + ", ".join(choices)


# Packages outside the core install (train, eval, predict on checkpoints) -> the extra that brings them.
# pyproject.toml's [project.optional-dependencies] lists the same; tests/test_extras.py checks both agree.
EXTRAS = {
    "onnx": "export", "onnxruntime": "export", "onnxscript": "export", "openvino": "export", "nncf": "export",
    "fastapi": "serve", "uvicorn": "serve", "multipart": "serve", "python_multipart": "serve",
    "optuna": "tune", "optuna_integration": "tune",
    "mlflow": "mlflow", "wandb": "wandb",
}


def missing_extra(err: ModuleNotFoundError) -> str | None:
    """The one line for a package an optional feature needs and this install lacks, or None when the
    missing module is not one of ours to name (a real bug: let its traceback show)."""
    top = (err.name or "").split(".")[0]
    if top not in EXTRAS:
        return None
    return f"this needs {top}, which is not installed: pip install 'rcnn-cli[{EXTRAS[top]}]'"

