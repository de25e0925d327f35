"""The prepared GPU check (measurements/gpu_check.py, `make gpu-check`) on a machine without a GPU: it says
so in one line and exits 3 without running anything; its step runner records a failing, a stuck and a
figure-less step and still runs the rest; its commands compose as rcnn would run them."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import ROOT, compose

SCRIPT = ROOT / "measurements" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module       # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


def test_without_a_gpu_it_says_so_in_one_line_writes_gpu_null_and_exits_3(tmp_path):
    # CUDA hidden, so the test means the same on a lent GPU machine; $OUT is where the file goes by default.
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OUT": str(tmp_path), "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 3, done.stdout + done.stderr
    [line] = done.stdout.splitlines()
    assert line.startswith("no CUDA GPU visible: nothing to check") and str(tmp_path / "gpu-check.json") in line
    result = json.loads((tmp_path / "gpu-check.json").read_text())
    assert result["gpu"] is None and result["status"] == "no gpu" and result["steps"] == []
    assert {"torch", "cuda", "cpu_cores"} <= result.keys()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu-check.json"]     # no step ran, no log written


def test_a_failing_a_stuck_and_a_figureless_step_are_recorded_and_the_others_still_run(gpu_check, tmp_path, capsys):
    python = [sys.executable, "-c"]
    grandchild = tmp_path / "grandchild.pid"
    steps = [
        gpu_check.Step("ok", [*python, "print('3 passed in 1.0s')"], 30, gpu_check.test_counts),
        gpu_check.Step("fails", [*python, "import sys; print('boom'); sys.exit(5)"], 30),
        # A child that starts its own child and hangs, as pytest and rcnn do: the whole group is killed.
        gpu_check.Step("stuck", [*python, "import subprocess, time; p = subprocess.Popen(['sleep', '60']); "
                                 f"open({str(grandchild)!r}, 'w').write(str(p.pid)); time.sleep(60)"], 2),
        gpu_check.Step("no-figures", [*python, "pass"], 30, lambda log: gpu_check.eval_figures(tmp_path / "absent")),
        gpu_check.Step("after", [*python, f"open({str(tmp_path / 'ran')!r}, 'w').write('yes')"], 30),
    ]
    start = time.perf_counter()
    code = gpu_check.check(steps, tmp_path / "out" / "check.json", {"gpu": "Fake GPU", "torch": "t", "cuda": "c"})
    assert time.perf_counter() - start < 30
    result = json.loads((tmp_path / "out" / "check.json").read_text())
    records = {r["step"]: r for r in result["steps"]}
    assert code == 1 and result["status"] == "failed" and result["gpu"] == "Fake GPU"
    assert result["failed_steps"] == ["fails", "stuck", "no-figures"]
    assert records["ok"]["status"] == "passed" and records["ok"]["figures"]["passed"] == 3
    assert records["fails"]["status"] == "failed" and records["fails"]["returncode"] == 5
    assert Path(records["fails"]["log"]).read_text() == "boom\n"
    assert records["stuck"]["status"] == "timed out" and 2 <= records["stuck"]["wall_s"] < 10
    assert records["no-figures"]["figures_error"].startswith("FileNotFoundError")
    assert records["after"]["status"] == "passed" and (tmp_path / "ran").read_text() == "yes"
    assert not _alive(int(grandchild.read_text()))
    table = capsys.readouterr().out
    assert "GPU check on Fake GPU" in table and "timed out" in table and "passed: 3" in table


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a killed process may linger as a zombie until it is reaped)."""
    for _ in range(50):
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        except FileNotFoundError:
            return False
        if state == "Z":
            return False
        time.sleep(0.1)
    return True


@pytest.mark.parametrize("line, counts", [
    ("===== 4 passed, 1 skipped in 150.20s (0:02:30) =====", (4, 0, 1, 0)),
    ("== 1 failed, 3 passed, 2 errors in 9.1s ==", (3, 1, 0, 2)),
    ("5 skipped in 0.5s", (0, 0, 5, 0)),
])
def test_test_counts_come_from_pytests_last_summary_line(gpu_check, line, counts):
    got = gpu_check.test_counts(f"tests/test_gpu.py::x 1 passed earlier\n{line}\n")
    assert (got["passed"], got["failed"], got["skipped"], got["error"]) == counts
    with pytest.raises(ValueError):
        gpu_check.test_counts("ImportError: no module named hydra\n")


def test_benchmark_figures_read_the_benchmarks_own_json(gpu_check):
    """The benchmark's JSON as it is written (a CPU run kept in measurements/), so a renamed key fails here,
    not during a GPU lease."""
    figures = gpu_check.benchmark_figures(ROOT / "measurements" / "results-cpu-resnet50_fpn.json")
    assert figures["ms_per_img"]["torchvision"] > 0 and figures["speedup_vs_torchvision"]["torchvision"] == 1
    assert set(figures["train_images_per_s"]) == {"torchvision", "ours", "ours_auto"}
    assert figures["benchmark"]["model"] == "resnet50_fpn"


def test_the_gpu_steps_overrides_compose_as_rcnn_runs_them(gpu_check, tmp_path):
    steps = {s.name: s for s in gpu_check.gpu_steps(tmp_path, tmp_path / "BCCD")}
    for name, command in (("benchmark", "benchmark"), ("train", "train")):
        args = steps[name].command[steps[name].command.index(command) + 1:]
        overrides = [a for a in args if "=" in a and not a.startswith("-")]
        cfg = compose(*overrides, command=command)
        assert cfg.dataset.name == "bccd" and cfg.dataset.root == str(tmp_path / "BCCD")
    assert cfg.trainer.accelerator == "gpu" and cfg.trainer.max_time == gpu_check.TRAIN_MAX_TIME
    assert sum(s.timeout_s for s in steps.values()) < 8 * 60 - 20      # one call of under 8 minutes


def test_make_gpu_check_never_installs_where_the_venv_is_there_or_py_is_given(tmp_path):
    venv = tmp_path / "venv"
    venv.mkdir()
    (venv / ".installed").touch()
    os.utime(venv / ".installed", (0, 0))     # older than pyproject.toml, as copied files can make it
    for given in (f"VENV={venv}", "PY=python3"):
        plan = subprocess.run(["make", "-n", "gpu-check", given], cwd=ROOT, capture_output=True, text=True)
        assert plan.returncode == 0 and "pip" not in plan.stdout, plan.stdout + plan.stderr
        assert "measurements/gpu_check.py" in plan.stdout
