"""Every file the toolkit writes goes through here: written whole or not at all (temp file beside
the target, flushed to disk, renamed over it), and run folders numbered one way."""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yields a temp path beside ``path`` to write to; after the block it is synced and renamed
    over ``path``, so readers see the old file or the new one, never half of one. On an error
    (or Ctrl-C) the temp file is removed and ``path`` is untouched.

    The temp name keeps the suffix (``.best.pid42.1a2b.tmp.onnx``): writers that pick the format by
    suffix (matplotlib, PIL, onnx) still work, and a leftover is recognisable. It names the writing
    process, so that the next write into the folder removes what a killed one left (``_remove_stale``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(path.parent)
    suffix = f".tmp{path.suffix}"
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(path, suffix), suffix=suffix)
    os.close(handle)
    try:
        yield Path(temp)
        _sync(temp)
        os.chmod(temp, 0o666 & ~_UMASK)        # mkstemp makes 0600 files; give the usual permissions
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_paths(*paths: str | Path) -> Iterator[list[Path]]:
    """``atomic_path`` for files that belong together (OpenVINO's ``model.xml`` and ``model.bin``):
    temp paths beside each that differ only in their suffix, as ``path`` and its companions do (a
    reader finds ``.bin`` from ``.xml`` by the name); renamed into place last one first, so the file
    that names the set appears only when the rest is there. On an error all temp files go."""
    paths = [Path(p) for p in paths]
    paths[0].parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(paths[0].parent)
    longest = max((p.suffix for p in paths), key=lambda s: len(os.fsencode(s)))
    handle, first = tempfile.mkstemp(dir=paths[0].parent, prefix=_temp_prefix(paths[0], f".tmp{longest}"),
                                     suffix=".tmp")
    os.close(handle)
    Path(first).unlink()
    temps = [Path(first + path.suffix) for path in paths]
    try:
        yield temps
        for temp, path in reversed(list(zip(temps, paths))):
            _sync(str(temp))
            os.replace(temp, path)
    except BaseException:
        for temp in temps:
            temp.unlink(missing_ok=True)
        raise


# A temp name: "." stem ".pid" process id "." mkstemp's 8 random characters ".tmp" and the target's suffix.
_TEMP_NAME = re.compile(r"\..*\.pid(\d+)\.[a-z0-9_]{8}\.tmp(\.[^.]*)?")
_cleaned: set[str] = set()     # folders already rid of stale temps by this process
NAME_MAX = 255                 # bytes in one file name (Linux and macOS file systems)
RANDOM_CHARACTERS = 8          # what mkstemp puts between prefix and suffix


def _temp_prefix(path: Path, suffix: str) -> str:
    """"." stem ".pid" process id ".", the stem cut so that the temp name fits in NAME_MAX bytes: a target
    named near the limit (the picture drawn for an input with a 250-byte name) still gets its temp file."""
    after = f".pid{os.getpid()}."
    room = NAME_MAX - len(os.fsencode(f".{after}{suffix}")) - RANDOM_CHARACTERS
    return f".{os.fsdecode(os.fsencode(path.stem)[:max(room, 0)])}{after}"


def _remove_stale(folder: Path) -> None:
    """Removes the temp files in ``folder`` whose writer is dead: a process killed mid-write (SIGKILL,
    power loss) cannot remove its own, and an export's is as large as the model. Once per folder and
    process: predict writes thousands of pictures into one folder. A live writer's temp (another
    process exporting to the same folder) is left alone; a recycled pid only delays the removal."""
    key = os.path.abspath(folder)
    if key in _cleaned:
        return
    _cleaned.add(key)
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        match = _TEMP_NAME.fullmatch(entry.name)
        if match and int(match.group(1)) != os.getpid() and not _alive(int(match.group(1))):
            try:
                os.unlink(entry.path)
            except OSError:
                pass       # gone already, or not ours to remove: the write itself goes on


def _alive(pid: int) -> bool:
    if os.name == "nt":
        return True        # Windows' os.kill(pid, 0) sends CTRL_C_EVENT: never probe there
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True        # another user's process (or a number no process has): not ours to judge
    return True


def _sync(path: str) -> None:
    with open(path, "rb") as file:
        os.fsync(file.fileno())


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as temp:
        temp.write_bytes(data)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as temp:
        temp.write_text(text, encoding="utf-8", newline="")   # text as given: CSV keeps its \r\n


def write_json(path: str | Path, data: Any, indent: int | None = 2) -> None:
    write_text(path, json.dumps(data, indent=indent))


def save_figure(figure, path: str | Path, dpi: int = 90) -> None:
    """A matplotlib figure as PNG (or whatever ``path``'s suffix says), atomically."""
    with atomic_path(path) as temp:
        figure.savefig(temp, dpi=dpi)


def torch_save(obj: Any, path: str | Path) -> None:
    """torch.save, atomically: a crash mid-write leaves the previous checkpoint intact."""
    import torch

    with atomic_path(path) as temp, open(temp, "wb") as file:
        torch.save(obj, file)


def numbered_folder(base: str | Path) -> Path:
    """``base`` if free, else ``base-2``, ``base-3``... (as Ultralytics numbers its runs)."""
    base = Path(base)
    candidate, n = base, 2
    while candidate.exists():
        candidate, n = base.with_name(f"{base.name}-{n}"), n + 1
    return candidate
