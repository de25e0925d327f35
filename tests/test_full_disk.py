"""Full and read-only disks (issue 26, item 4): ``rcnn train``, ``predict``, ``export`` and ``eval`` end
with one line naming what could not be written, a non-zero exit and no traceback, and leave nothing
half-written under a final name (no temp file either); an output folder that cannot be written is
refused before the work starts (exit 2).

Tests run as root here, where chmod stops nothing, and a CI runner cannot mount a small disk: the disk
is faked where Python opens files (``FakeDisk``), as the kernel would refuse the writes. One test also
fills a real 40 MB tmpfs in a private mount namespace, where the machine allows one.
"""

from __future__ import annotations

import builtins
import errno
import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from helpers import TINY_TRAIN, tiny_images
from PIL import Image

from rcnn_cli.errors import DiskRefused, UsageError

# One training step and one validation batch: enough to reach the first checkpoint save.
QUICK = [*TINY_TRAIN, "trainer.limit_train_batches=1", "trainer.limit_val_batches=1"]


class FakeDisk:
    """Writes to files under ``folder`` whose name passes ``names`` fail as the kernel fails them:
    ENOSPC (or EDQUOT) after ``room`` bytes of the file are written, EROFS or EACCES when the file is
    opened or created. The first ``spare`` such files are written normally (a disk that fills mid-run).
    ``attempts``: the names of the files opened for writing that were matched."""

    def __init__(self, monkeypatch, folder: Path, code: int = errno.ENOSPC,
                 names: Callable[[str], bool] = lambda name: True, spare: int = 0, room: int = 64 * 1024):
        self.folder, self.code, self.names, self.spare, self.room = Path(folder), code, names, spare, room
        self.attempts: list[str] = []
        real_open, real_mkstemp = builtins.open, tempfile.mkstemp

        def fake_open(file, mode="r", *args, **kwargs):
            if not self._refuses(file, mode):
                return real_open(file, mode, *args, **kwargs)
            self.attempts.append(Path(os.fsdecode(file)).name)
            if len(self.attempts) <= self.spare:
                return real_open(file, mode, *args, **kwargs)
            if self.code in (errno.EROFS, errno.EACCES):
                raise OSError(self.code, os.strerror(self.code), os.fsdecode(file))
            return self._filling(real_open(file, mode.replace("t", "") + ("" if "b" in mode else "b"), buffering=0),
                                 mode, *args, **kwargs)

        def fake_mkstemp(*args, dir=None, **kwargs):
            if self.code in (errno.EROFS, errno.EACCES) and dir is not None and self._under(dir):
                raise OSError(self.code, os.strerror(self.code), os.fsdecode(dir))
            return real_mkstemp(*args, dir=dir, **kwargs)

        monkeypatch.setattr(builtins, "open", fake_open)
        monkeypatch.setattr(io, "open", fake_open)            # pathlib's write_text and write_bytes
        monkeypatch.setattr(tempfile, "mkstemp", fake_mkstemp)

    def _under(self, file) -> bool:
        return Path(os.path.abspath(os.fsdecode(file))).is_relative_to(self.folder.absolute())

    def _refuses(self, file, mode: str) -> bool:
        return (isinstance(file, (str, bytes, os.PathLike)) and any(c in mode for c in "wax+")
                and self._under(file) and self.names(Path(os.fsdecode(file)).name))

    def _filling(self, raw, mode: str, buffering: int = -1, encoding=None, errors=None, newline=None, **_):
        disk = self

        class Filling(io.RawIOBase):
            """The real file until ``room`` bytes are in it; then the write fails as on a full disk."""
            written = 0

            def writable(self):
                return True

            def readable(self):
                return raw.readable()

            def seekable(self):
                return raw.seekable()

            def readinto(self, buffer):
                return raw.readinto(buffer)

            def seek(self, *args):
                return raw.seek(*args)

            def tell(self):
                return raw.tell()

            def write(self, data):
                allowed = max(disk.room - self.written, 0)
                if allowed == 0:
                    raise OSError(disk.code, os.strerror(disk.code))
                count = raw.write(bytes(memoryview(data)[:allowed]))
                self.written += count
                return count

            def close(self):
                raw.close()
                super().close()

        filling = Filling()
        buffered = io.BufferedRandom(filling) if "+" in mode else io.BufferedWriter(filling)
        return buffered if "b" in mode else io.TextIOWrapper(buffered, encoding or "utf-8", errors, newline)


def rcnn(monkeypatch, capfd, *args: str) -> tuple[int, str]:
    """The ``rcnn`` command in this process (so that the fake disk applies): (exit code, stderr)."""
    from rcnn_cli import cli

    monkeypatch.setattr(sys, "argv", ["rcnn", *args])
    monkeypatch.setenv("COLUMNS", "200")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):   # made at import: an earlier stderr
        for handler in logging.getLogger(name).handlers:
            if type(handler) is logging.StreamHandler:
                monkeypatch.setattr(handler, "stream", sys.stderr)
    capfd.readouterr()
    with pytest.raises(SystemExit) as ended:
        cli.main()
    return ended.value.code, capfd.readouterr().err


def error_line(stderr: str) -> str:
    """The one error line: no traceback, and nothing said after it."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower() or "exception" in line.lower()]
    assert "Traceback" not in stderr and errors == lines[-1:], stderr[-4000:]
    return lines[-1]


def only_line(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-4000:]
    return lines[0]


def temp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if ".tmp" in p.name or p.name.startswith("tmp")]


def weights_of(tiny_run: Path) -> str:
    return str(tiny_run / "checkpoints" / "best.ckpt")


def no_work(what: str):
    def refuse(*args, **kwargs):
        raise AssertionError(f"{what} ran before the output folder was checked")
    return refuse


# rcnn train

def test_train_on_a_full_disk_is_one_line_and_does_not_save_interrupted_ckpt(tmp_path, monkeypatch, capfd):
    run_dir = tmp_path / "run"
    checkpoints = run_dir / "checkpoints"
    disk = FakeDisk(monkeypatch, checkpoints, errno.ENOSPC, names=lambda name: name.endswith(".ckpt"))
    code, stderr = rcnn(monkeypatch, capfd, "train", *QUICK, f"run_dir={run_dir}")
    line = error_line(stderr)
    assert code == 1
    assert re.fullmatch(rf"error: cannot write {re.escape(str(checkpoints / 'best.ckpt'))}: No space left on "
                        r"device \(needs about [0-9.]+ MB, [0-9.]+ [kMGT]?B free\)", line), line
    assert len(disk.attempts) == 1, disk.attempts        # interrupted.ckpt was not tried on the full disk
    assert list(checkpoints.iterdir()) == []             # no best, last or interrupted.ckpt, no temp file
    assert (run_dir / "config.yaml").is_file()           # what was written before is whole


def test_ctrl_c_in_train_on_a_full_disk_is_one_line_naming_interrupted_ckpt(tmp_path, monkeypatch, capfd):
    from rcnn_cli.training.module import DetectorModule

    run_dir = tmp_path / "run"
    checkpoints = run_dir / "checkpoints"
    FakeDisk(monkeypatch, checkpoints, errno.ENOSPC, names=lambda name: name.endswith(".ckpt"))

    def ctrl_c(self, batch, batch_index):
        raise KeyboardInterrupt

    monkeypatch.setattr(DetectorModule, "training_step", ctrl_c)
    handler = signal.getsignal(signal.SIGINT)          # Lightning ignores SIGINT after a Ctrl-C
    try:
        code, stderr = rcnn(monkeypatch, capfd, "train", *QUICK, f"run_dir={run_dir}")
    finally:
        signal.signal(signal.SIGINT, handler)
    line = error_line(stderr)
    assert code == 1
    assert f"cannot write {checkpoints / 'interrupted.ckpt'}: No space left on device" in line, line
    assert list(checkpoints.iterdir()) == []


def test_train_metrics_on_a_full_disk_name_the_run_folder(tmp_path, monkeypatch, capfd):
    # metrics.csv is Lightning's own write: its OSError names no file, so the line names the run folder
    run_dir = tmp_path / "run"
    FakeDisk(monkeypatch, run_dir, errno.ENOSPC, names=lambda name: name == "metrics.csv", room=0)
    code, stderr = rcnn(monkeypatch, capfd, "train", *QUICK, f"run_dir={run_dir}", "logger=csv")
    line = error_line(stderr)
    assert code == 1
    assert re.fullmatch(rf"error: cannot write into {re.escape(str(run_dir))}: No space left on device "
                        r"\([0-9.]+ [kMGT]?B free\)", line), line
    assert not list((run_dir / "checkpoints").glob("*")) and not temp_files(run_dir)


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES])
def test_a_run_dir_that_cannot_be_written_is_refused_before_training(tmp_path, monkeypatch, capfd, code):
    from rcnn_cli.data.pipeline.datamodule import DetectionDataModule

    run_dir = tmp_path / "run"
    FakeDisk(monkeypatch, run_dir, code)
    monkeypatch.setattr(DetectionDataModule, "setup", no_work("loading the data"))
    exit_code, stderr = rcnn(monkeypatch, capfd, "train", *QUICK, f"run_dir={run_dir}")
    assert exit_code == 2
    assert only_line(stderr) == f"error: run_dir {run_dir}: cannot write there ({os.strerror(code)})"
    assert not run_dir.exists()


# rcnn predict

def test_predict_on_a_disk_that_fills_mid_run_is_one_line(tiny_run, tmp_path, monkeypatch, capfd):
    photos = tmp_path / "photos"
    photos.mkdir()
    for picture in tiny_images(3):
        (photos / picture.name).write_bytes(picture.read_bytes())
    names = sorted(p.name for p in photos.iterdir())
    out = tmp_path / "out"
    FakeDisk(monkeypatch, out, errno.ENOSPC, names=lambda name: name.endswith(".jpg"), spare=1, room=1024)
    code, stderr = rcnn(monkeypatch, capfd, "predict", str(photos), "--weights", weights_of(tiny_run),
                        "--out", str(out), "--batch-size", "1", "--precision", "fp32")
    line = error_line(stderr)
    assert code == 1
    assert re.fullmatch(rf"error: cannot write {re.escape(str(out / names[1]))}: No space left on device "
                        r"\(needs more than 1.0 kB, [0-9.]+ [kMGT]?B free\)", line), line
    assert sorted(p.name for p in out.glob("*.jpg")) == [names[0]]      # the finished picture, whole
    Image.open(out / names[0]).load()
    assert not (out / "predictions.json").exists() and not temp_files(out)
    journal = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [Path(r["image"]).name for r in journal] == [names[0]]       # the finished picture's result is kept


# rcnn export

@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_on_a_full_disk_is_one_line_and_leaves_nothing(tiny_run, tmp_path, monkeypatch, capfd, fmt):
    out = tmp_path / "exported" / f"tiny.{fmt}"
    FakeDisk(monkeypatch, out.parent, errno.ENOSPC, names=lambda name: name.endswith(f".{fmt}"))
    code, stderr = rcnn(monkeypatch, capfd, "export", "--weights", weights_of(tiny_run), "--format", fmt,
                        "--out", str(out))
    line = error_line(stderr)
    assert code == 1
    assert line.startswith(f"error: cannot write {out}: No space left on device (needs "), line
    assert list(out.parent.iterdir()) == []


def test_an_export_folder_that_cannot_be_written_is_refused_before_loading(tiny_run, tmp_path, monkeypatch,
                                                                           capfd):
    from rcnn_cli.inference import predictor

    out = tmp_path / "locked" / "tiny.onnx"
    FakeDisk(monkeypatch, out.parent, errno.EROFS)
    monkeypatch.setattr(predictor, "load_predictor", no_work("loading the model"))
    code, stderr = rcnn(monkeypatch, capfd, "export", "--weights", weights_of(tiny_run), "--out", str(out))
    assert code == 2
    assert only_line(stderr) == f"error: --out {out}: cannot write there (Read-only file system)"
    assert not out.parent.exists()


# rcnn eval

def test_eval_on_a_full_disk_is_one_line_and_leaves_no_half_file(tiny_run, tmp_path, monkeypatch, capfd):
    out = tmp_path / "eval"
    FakeDisk(monkeypatch, out, errno.ENOSPC, names=lambda name: name.endswith(".png"), room=1024)
    code, stderr = rcnn(monkeypatch, capfd, "eval", "--weights", weights_of(tiny_run), "--out", str(out),
                        "trainer.accelerator=cpu")
    line = error_line(stderr)
    assert code == 1
    assert re.fullmatch(rf"error: cannot write {re.escape(str(out))}/\S+\.png: No space left on device "
                        r"\(needs more than 1.0 kB, [0-9.]+ [kMGT]?B free\)", line), line
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "thresholds.json"]   # written whole before


@pytest.mark.parametrize("option", ["--out", "--json", "--predictions"])
def test_an_eval_output_that_cannot_be_written_is_refused_before_scoring(tiny_run, tmp_path, monkeypatch, capfd,
                                                                         option):
    from rcnn_cli.commands import evaluate

    locked = tmp_path / "locked"
    target = locked if option == "--out" else locked / "x.json"
    FakeDisk(monkeypatch, locked, errno.EACCES)
    monkeypatch.setattr(evaluate, "score", no_work("scoring"))
    code, stderr = rcnn(monkeypatch, capfd, "eval", "--weights", weights_of(tiny_run), option, str(target),
                        "trainer.accelerator=cpu")
    assert code == 2
    assert only_line(stderr) == f"error: {option} {target}: cannot write there (Permission denied)"


# the writing layer

def megabyte_ir():
    """An OpenVINO model with 1 MB of weights."""
    import openvino as ov
    import openvino.opset13 as ops

    image = ops.parameter([1, 262144], np.float32, name="x")
    return ov.Model([ops.add(image, ops.constant(np.zeros((1, 262144), np.float32)))], [image])


def openvino_fails_to_write(monkeypatch, free: int | None) -> None:
    """OpenVINO's C++ writer on a full disk: RuntimeError without errno, and what it wrote removed.
    free: the bytes left on the disk (None: the real figure)."""
    import shutil

    import openvino as ov

    def refused(model, path, compress_to_fp16=True):
        raise RuntimeError("basic_ios::clear: iostream error")

    monkeypatch.setattr(ov, "save_model", refused)
    if free is not None:
        usage = shutil.disk_usage(".")
        monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=free))


def test_openvino_failing_without_room_for_its_weights_is_a_full_disk(tmp_path, monkeypatch):
    from rcnn_cli.export.exporters import save_ir
    from rcnn_cli.files import atomic_paths

    openvino_fails_to_write(monkeypatch, free=4096)
    target = tmp_path / "model.xml"
    with pytest.raises(DiskRefused) as refused, atomic_paths(target, target.with_suffix(".bin")) as pending:
        save_ir(megabyte_ir(), pending[0])
    assert refused.value.errno == errno.ENOSPC and refused.value.filename == str(target)   # not the temp name
    assert str(refused.value) == f"cannot write {target}: No space left on device (needs about 1.1 MB, 4.1 kB free)"
    assert list(tmp_path.iterdir()) == []


def test_openvino_failing_with_room_left_is_its_own_error(tmp_path, monkeypatch):
    from rcnn_cli.export.exporters import save_ir
    from rcnn_cli.files import atomic_paths

    openvino_fails_to_write(monkeypatch, free=None)
    target = tmp_path / "model.xml"
    with pytest.raises(RuntimeError, match="iostream error"), atomic_paths(target) as pending:
        save_ir(megabyte_ir(), pending[0])
    assert list(tmp_path.iterdir()) == []


def test_a_permission_error_while_reading_is_not_called_a_write():
    from rcnn_cli.errors import disk_refusal

    assert disk_refusal(PermissionError(errno.EACCES, "Permission denied", "/data/a.jpg")) is None
    refused = disk_refusal(OSError(errno.EROFS, "Read-only file system", "/data/out.json"))
    assert str(refused) == "cannot write /data/out.json: Read-only file system"


def test_a_deliberate_error_inside_a_write_stays_itself(tmp_path):
    # raised while handling a full disk, it still says what its author meant, and the temp file goes
    from rcnn_cli import files

    with pytest.raises(UsageError, match="^no$"), files.atomic_path(tmp_path / "a.json") as temp:
        temp.write_bytes(b"{")
        try:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError:
            raise UsageError("no")      # noqa: B904 (the context is what the test is about)
    assert list(tmp_path.iterdir()) == []


def test_the_writable_check_leaves_nothing_behind(tmp_path):
    from rcnn_cli import files

    files.check_writable(tmp_path / "new" / "out")
    files.check_writable(tmp_path)
    assert list(tmp_path.iterdir()) == []           # a command that fails later leaves no empty folder


def test_a_folder_on_a_disk_already_full_is_refused_by_the_check(tmp_path, monkeypatch):
    # mkstemp makes an empty file even on a full disk: the check writes a byte, which the disk refuses
    from rcnn_cli import files

    def full(handle, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files.os, "write", full)
    with pytest.raises(DiskRefused) as refused:
        files.check_writable(tmp_path / "new" / "out")
    assert refused.value.errno == errno.ENOSPC and refused.value.filename == str(tmp_path / "new" / "out")
    assert list(tmp_path.iterdir()) == []            # the folders it made are gone, and its temp file


# a real small disk, where this machine lets a private mount namespace have one

def private_tmpfs() -> bool:
    try:
        with tempfile.TemporaryDirectory() as folder:
            probe = f"mount -t tmpfs -o size=1m tmpfs {folder} && ! head -c 2000000 /dev/zero > {folder}/x 2>/dev/null"
            return subprocess.run(["unshare", "-rm", "sh", "-c", probe], capture_output=True).returncode == 0
    except OSError:
        return False


def on_small_disk(megabytes: int, command: str, cwd: Path) -> tuple[subprocess.CompletedProcess, list[str]]:
    """``rcnn COMMAND`` with ./small a tmpfs of ``megabytes`` MB, in a private user and mount namespace
    (nothing outside sees the mount) -> (the result, what was left in small/ after it)."""
    (cwd / "small").mkdir()
    script = (f"mount -t tmpfs -o size={megabytes}m tmpfs small && {sys.executable} -m rcnn_cli.cli {command}; "
              "code=$?; echo; echo left: $(cd small && find . -mindepth 1 | sort); exit $code")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200", "NO_ALBUMENTATIONS_UPDATE": "1"}
    result = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, cwd=cwd,
                            env=env, timeout=600, stdin=subprocess.DEVNULL)
    return result, result.stdout.rsplit("left:", 1)[-1].split()


@pytest.mark.slow       # a subprocess that trains: ~25 s on the 2-core EPYC, under load
@pytest.mark.skipif(not private_tmpfs(), reason="needs unshare -rm and a tmpfs mount (a private small disk); "
                    "the fake-disk tests above cover the same paths")
def test_train_into_a_real_small_disk_is_one_line(tmp_path):
    # the report: four chained tracebacks, because saving interrupted.ckpt failed too
    result, left = on_small_disk(40, " ".join(["train", *QUICK, "run_dir=small/run"]), tmp_path)
    assert result.returncode == 1
    line = error_line(result.stderr)
    assert re.fullmatch(r"error: cannot write \S*/small/run/checkpoints/best.ckpt: No space left on device "
                        r"\(needs about [0-9.]+ MB, [0-9.]+ MB free\)", line), line
    assert "./run/checkpoints" in left and not [name for name in left if name.endswith(".ckpt") or ".tmp" in name]
