"""One base class for every error the user should see as one line instead of a traceback.

Commands raise; ``rcnn_cli.cli.main`` prints ``error: <message>`` once and exits with the error's
code: 2 for usage and configuration (the command line or the files it names must change), 1 for
a job that started and failed.
"""

from __future__ import annotations

import difflib
import errno
import os
import shutil
from pathlib import Path


class RcnnError(Exception):
    """An error with a one-line message for the user and the exit code it ends the command with."""

    exit_code = 2


class UsageError(RcnnError):
    """A wrong option, value or file on the command line."""


class JobFailed(RcnnError):
    """The job ran and failed (diverged, out of memory, an export that disagreed with torch)."""

    exit_code = 1


# What the kernel says when a disk refuses a write. Only writes get the first four, so they are recognised
# anywhere; reads are refused with the last two as well, so those count only where a write is known to have
# failed (``files`` knows).
SPACE = {errno.ENOSPC, errno.EFBIG} | ({errno.EDQUOT} if hasattr(errno, "EDQUOT") else set())
WRITES_ONLY = SPACE | {errno.EROFS}
FORBIDDEN = {errno.EACCES, errno.EPERM}


class DiskRefused(JobFailed, OSError):
    """A write the disk refused (full, over quota, read-only, not permitted), as one line: the file the user
    would have got (never its temp name), why, and for a lack of space what the file needed and what is
    free. Still an OSError, for code that catches those."""

    def __init__(self, code: int, target: str | Path | None, needs: int | None = None, written: int | None = None,
                 into: bool = False):
        """needs: the file's size where it is known before writing (estimated: ``about``); written: how much
        of it was written when the disk refused the rest; into: ``target`` is the folder being written."""
        super().__init__(code, os.strerror(code), None if target is None else str(target))
        self.needs, self.written, self.into = needs, written, into

    def __str__(self) -> str:
        where = "a file" if self.filename is None else f"into {self.filename}" if self.into else self.filename
        space = []
        if self.errno in SPACE:
            if self.needs:
                space.append(f"needs about {_size(self.needs)}")
            elif self.written:
                space.append(f"needs more than {_size(self.written)}")
            if self.errno == errno.ENOSPC and self.filename and (free := _free_space(Path(self.filename))) is not None:
                space.append(f"{_size(free)} free")
        return f"cannot write {where}: {self.strerror}" + (f" ({', '.join(space)})" if space else "")


def disk_refusal(err: BaseException, target: str | Path | None = None, needs: int | None = None,
                 written: int | None = None, into: bool = False) -> DiskRefused | None:
    """``err`` as the write the disk refused, if that is what it comes down to anywhere in its chain of causes
    (torch reports a full disk as a RuntimeError raised while handling the OSError); else None.
    target: the file being written (or, with ``into``, the folder), known to be a write: then a refused
    permission counts too. Without it, the OSError's own file name, if it has one."""
    known = WRITES_ONLY | (FORBIDDEN if target is not None else set())
    for cause in _chain(err):
        if isinstance(cause, DiskRefused):
            return cause
        if isinstance(cause, OSError) and cause.errno in known:
            return DiskRefused(cause.errno, target if target is not None else cause.filename, needs, written, into)
    return None


def _chain(err: BaseException | None):
    """``err`` and what it was raised from or while handling, as a traceback would show them."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ if err.__cause__ is not None else None if err.__suppress_context__ else err.__context__


def _free_space(path: Path) -> int | None:
    """Free bytes on the disk that holds ``path`` (its nearest existing folder); None where unknown."""
    for folder in (path, *path.parents):
        try:
            return shutil.disk_usage(folder).free
        except OSError:
            continue
    return None


def _size(count: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} B"


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

