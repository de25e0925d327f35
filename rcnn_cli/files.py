"""Every file the toolkit writes goes through here: written whole or not at all (temp file beside
the target, flushed to disk, renamed over it), a write the disk refuses raised as ``DiskRefused``
naming the target, and run folders numbered one way."""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from .errors import DiskRefused, RcnnError, disk_refusal

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_path(path: str | Path, needs: int | None = None) -> Iterator[Path]:
    """Yields a temp path beside ``path`` to write to; after the block it is synced and renamed
    over ``path``, so readers see the old file or the new one, never half of one. On an error
    (or Ctrl-C) the temp file is removed and ``path`` is untouched; a write the disk refused is
    raised as ``DiskRefused`` naming ``path`` (``needs``: its size, where known before writing).

    The temp name keeps the suffix (``.best.pid42.1a2b.tmp.onnx``): writers that pick the format by
    suffix (matplotlib, PIL, onnx) still work, and a leftover is recognisable. It names the writing
    process, so that the next write into the folder removes what a killed one left (``_remove_stale``).
    """
    path = Path(path)
    temps: list[Path] = []
    with _named_refusals(path, temps, needs):
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale(path.parent)
        suffix = f".tmp{path.suffix}"
        handle, temp = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(path, suffix), suffix=suffix)
        os.close(handle)
        temps.append(Path(temp))
        yield Path(temp)
        _sync(temp)
        os.chmod(temp, 0o666 & ~_UMASK)        # mkstemp makes 0600 files; give the usual permissions
        os.replace(temp, path)


@contextmanager
def atomic_paths(*paths: str | Path) -> Iterator[list[Path]]:
    """``atomic_path`` for files that belong together (OpenVINO's ``model.xml`` and ``model.bin``):
    temp paths beside each that differ only in their suffix, as ``path`` and its companions do (a
    reader finds ``.bin`` from ``.xml`` by the name); renamed into place last one first, so the file
    that names the set appears only when the rest is there. On an error all temp files go."""
    paths = [Path(p) for p in paths]
    temps: list[Path] = []
    with _named_refusals(paths[0], temps):
        paths[0].parent.mkdir(parents=True, exist_ok=True)
        _remove_stale(paths[0].parent)
        longest = max((p.suffix for p in paths), key=lambda s: len(os.fsencode(s)))
        handle, first = tempfile.mkstemp(dir=paths[0].parent, prefix=_temp_prefix(paths[0], f".tmp{longest}"),
                                         suffix=".tmp")
        os.close(handle)
        Path(first).unlink()
        temps += [Path(first + path.suffix) for path in paths]
        yield temps
        for temp, path in reversed(list(zip(temps, paths))):
            _sync(str(temp))
            os.replace(temp, path)


@contextmanager
def _named_refusals(target: Path, temps: list[Path], needs: int | None = None) -> Iterator[None]:
    """On any error: removes ``temps``; a write the disk refused becomes ``DiskRefused`` naming ``target``
    (never the temp name the OS saw, nor one a writer named), with how much of it was written and what it
    needed."""
    try:
        yield
    except BaseException as err:
        written = sum(temp.stat().st_size for temp in temps if temp.exists())
        for temp in temps:
            temp.unlink(missing_ok=True)
        if isinstance(err, (RcnnError, KeyboardInterrupt)) and not isinstance(err, DiskRefused):
            raise
        refusal = disk_refusal(err, target, needs, written)
        if refusal is not None and refusal.filename in {str(temp) for temp in temps}:
            refusal = DiskRefused(refusal.errno, target, refusal.needs or needs, written)
        if refusal is None or refusal is err:
            raise
        raise refusal from err


@contextmanager
def writes_into(folder: Path) -> Iterator[None]:
    """Around work that writes into ``folder`` through other libraries (Lightning's metrics.csv): a write
    they report without a file name (a full disk at ``write()``) becomes ``DiskRefused`` naming the folder."""
    try:
        yield
    except Exception as err:
        refusal = disk_refusal(err)
        if refusal is None or refusal.filename is not None:
            raise
        raise DiskRefused(refusal.errno, folder, into=True) from err


def check_writable(folder: str | Path) -> None:
    """Creates ``folder`` and writes a byte into a temp file there: a folder that cannot be written (read-only,
    not permitted, a disk already full) is ``DiskRefused`` now, before the work that would write there.
    Leaves nothing behind, not even the folders it made: a command that fails later leaves no empty one."""
    folder = Path(folder)
    created = next((p for p in reversed((folder, *folder.parents)) if not p.exists()), None)
    temps: list[Path] = []
    try:
        with _named_refusals(folder, temps):
            folder.mkdir(parents=True, exist_ok=True)
            handle, temp = tempfile.mkstemp(dir=folder, prefix=_temp_prefix(folder / "write-check", ".tmp"),
                                            suffix=".tmp")
            temps.append(Path(temp))
            try:
                os.write(handle, b"\0")       # a full disk refuses even one byte
            finally:
                os.close(handle)
            os.unlink(temp)
    finally:
        for made in (folder, *folder.parents) if created is not None else ():
            with suppress(OSError):
                made.rmdir()          # only if empty: what the check made, never what others put there
            if made == created:
                break


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
    with atomic_path(path, len(data)) as temp:
        temp.write_bytes(data)


def write_text(path: str | Path, text: str) -> None:
    data = text.encode("utf-8")
    with atomic_path(path, len(data)) as temp:
        temp.write_bytes(data)     # text as given: CSV keeps its \r\n


def write_json(path: str | Path, data: Any, indent: int | None = 2) -> None:
    write_text(path, json.dumps(data, indent=indent))


def save_figure(figure, path: str | Path, dpi: int = 90) -> None:
    """A matplotlib figure as PNG (or whatever ``path``'s suffix says), atomically."""
    with atomic_path(path) as temp:
        figure.savefig(temp, dpi=dpi)


def torch_save(obj: Any, path: str | Path) -> None:
    """torch.save, atomically: a crash mid-write leaves the previous checkpoint intact."""
    import torch

    with atomic_path(path, _tensor_bytes(obj)) as temp, open(temp, "wb") as file:
        torch.save(obj, file)


def _tensor_bytes(obj: Any) -> int:
    """What the tensors in a checkpoint (nested dicts, lists) take: nearly all of its size on disk."""
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.untyped_storage().nbytes()
    if isinstance(obj, dict):
        return sum(_tensor_bytes(value) for value in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_tensor_bytes(value) for value in obj)
    return 0


def numbered_folder(base: str | Path) -> Path:
    """``base`` if free, else ``base-2``, ``base-3``... (as Ultralytics numbers its runs)."""
    base = Path(base)
    candidate, n = base, 2
    while candidate.exists():
        candidate, n = base.with_name(f"{base.name}-{n}"), n + 1
    return candidate
