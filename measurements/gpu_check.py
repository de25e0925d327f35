"""The prepared check for a lent GPU machine (issue 25, item 5; docs/gpu-check.md): tests/test_gpu.py,
`rcnn benchmark device=cuda` (resnet50_fpn at 800 px against torchvision with the same weights), a short
BCCD training and its AP. Writes one JSON file and prints a summary table.
Usage: python measurements/gpu_check.py [--json PATH] [--bccd ROOT]   (or: make gpu-check)
Exit status: 0 every step passed; 1 a step failed or ran past its cap; 3 no CUDA GPU visible (nothing run)."""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NO_GPU = 3
# Each step's cap in seconds. Together under 8 minutes, so the whole check fits one call of the lent
# machine; a step that hangs loses its own figures, never the others'.
CAPS = {"tests": 210, "benchmark": 100, "train": 95, "eval": 45}
TRAIN_EPOCHS = 4          # from scratch: enough for an AP well above zero, seconds an epoch on a GPU
TRAIN_MAX_TIME = "00:00:01:10"   # DD:HH:MM:SS; inside the train cap, leaving the start-up and last checkpoint


@dataclass
class Step:
    name: str
    command: list[str]
    timeout_s: float
    # Reads the step's figures from its log text (and files it wrote); raises when they are missing.
    figures: Callable[[str], dict] = field(default=lambda log: {})


def run_step(step: Step, log_path: Path) -> dict:
    """Runs one step with its output in ``log_path``; on its cap, kills its whole process group (pytest
    and rcnn start children that would otherwise keep the GPU busy for the next step)."""
    record = {"step": step.name, "command": shlex.join(step.command), "timeout_s": step.timeout_s,
              "log": str(log_path)}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "PYTHONUNBUFFERED": "1", "NO_ALBUMENTATIONS_UPDATE": "1", "COLUMNS": "200"}
    start = time.perf_counter()
    with open(log_path, "w") as log:
        process = subprocess.Popen(step.command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            record["status"] = "passed" if process.wait(timeout=step.timeout_s) == 0 else "failed"
            record["returncode"] = process.returncode
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            record["status"] = "timed out"
    record["wall_s"] = round(time.perf_counter() - start, 1)
    try:
        record["figures"] = step.figures(log_path.read_text(errors="replace"))
    except (OSError, ValueError, KeyError, TypeError) as err:   # a step that "passed" without its figures did not
        record["figures"] = {}
        if record["status"] == "passed":
            record["status"] = "failed"
        record["figures_error"] = f"{type(err).__name__}: {err}"
    return record


def check(steps: list[Step], json_path: Path, info: dict) -> int:
    """Runs every step whatever the others did, writes ``info`` with their records to ``json_path``
    and prints the table; 0 when all passed, else 1."""
    json_path.parent.mkdir(parents=True, exist_ok=True)
    records = []
    for step in steps:
        print(f"{step.name}: running (cap {step.timeout_s:g} s): {shlex.join(step.command)}", flush=True)
        log_path = json_path.with_name(f"{json_path.stem}-{step.name}.log")
        records.append(run_step(step, log_path))
        print(f"{step.name}: {records[-1]['status']} in {records[-1]['wall_s']:g} s", flush=True)
    failed = [r["step"] for r in records if r["status"] != "passed"]
    result = {**info, "status": "failed" if failed else "passed", "failed_steps": failed, "steps": records}
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    print_table(result)
    print(f"written to {json_path}")
    return 1 if failed else 0


def print_table(result: dict) -> None:
    print(f"\nGPU check on {result['gpu']} (torch {result['torch']}, CUDA {result['cuda']})")
    print(f"{'step':<10} {'status':<10} {'wall s':>7}")
    for record in result["steps"]:
        print(f"{record['step']:<10} {record['status']:<10} {record['wall_s']:>7g}")
        for key, value in record["figures"].items():
            if key != "benchmark":                       # the whole benchmark JSON: in the file only
                print(f"{'':<10} {key}: {shown(value)}")
        if "figures_error" in record:
            print(f"{'':<10} no figures: {record['figures_error']}")


def shown(value) -> str:
    if isinstance(value, dict):
        return " ".join(f"{key}={shown(v)}" for key, v in value.items())
    if isinstance(value, float):
        return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return str(value)


def test_counts(log: str) -> dict:
    """passed/failed/skipped/error counts from pytest's last line, e.g. '4 passed, 1 skipped in 150.2s'."""
    summary = [line for line in log.splitlines() if re.search(r"\d+ (passed|failed|skipped|errors?)\b", line)]
    if not summary:
        raise ValueError("no pytest summary line in the log")
    counts = dict.fromkeys(("passed", "failed", "skipped", "error"), 0)
    for number, word in re.findall(r"(\d+) (passed|failed|skipped|errors?)\b", summary[-1]):
        counts[word.rstrip("s") if word.startswith("error") else word] = int(number)
    return counts


def benchmark_figures(path: Path) -> dict:
    """The benchmark's headline figures, and its whole JSON (so this check's file is the only one to keep)."""
    result = json.loads(path.read_text())
    inference, training = result["inference"], result["training"]
    return {"ms_per_img": {n: round(f["latency_batch1"]["median_s"] * 1000, 2) for n, f in inference.items()},
            "speedup_vs_torchvision": {n: round(v, 3) for n, v in result["speedup"].items()},
            "train_images_per_s": {n: round(f["train_images_per_s"], 2) for n, f in training.items()},
            "agreement_map50": result["agreement_map50"], "auto": result["auto"], "benchmark": result}


def eval_figures(path: Path) -> dict:
    metrics = json.loads(path.read_text())
    return {"ap50": round(metrics["map_50"], 4), "ap": round(metrics["map"], 4)}


def bccd_root(given: str | None) -> Path:
    """BCCD as the tests find it (RCNN_SHARED, else ../shared beside the checkout), else a shared/ inside
    the checkout: only that one travels to a lent machine."""
    if given:
        return Path(given).resolve()
    shared = Path(os.environ.get("RCNN_SHARED", ROOT.parent / "shared"))
    for root in (shared, ROOT / "shared"):
        if (root / "datasets" / "bccd-voc" / "BCCD").is_dir():
            return (root / "datasets" / "bccd-voc" / "BCCD").resolve()
    return (shared / "datasets" / "bccd-voc" / "BCCD").resolve()


def gpu_steps(work: Path, bccd: Path) -> list[Step]:
    rcnn = [sys.executable, "-m", "rcnn_cli.cli"]
    data = ["dataset=bccd", f"dataset.root={bccd}"]
    run_dir = work / "bccd"
    return [
        Step("tests", [sys.executable, "-m", "pytest", "tests/test_gpu.py", "-n", "0", "-p", "no:cacheprovider"],
             CAPS["tests"], test_counts),
        # 8 images at 800x1066, warm-ups first (cuDNN picks its kernels), training steps at batch 4.
        Step("benchmark", [*rcnn, "benchmark", "model=resnet50_fpn", *data, "device=cuda", "--count", "8",
                           "--batch", "4", "--repeats", "5", "--warmup", "2", "--json", str(work / "benchmark.json")],
             CAPS["benchmark"], lambda log: benchmark_figures(work / "benchmark.json")),
        # max_time ends training early (with a checkpoint) on a slower GPU, before the step's cap kills it.
        Step("train", [*rcnn, "train", "experiment=bccd_cpu", *data, "trainer.accelerator=gpu",
                       f"trainer.max_epochs={TRAIN_EPOCHS}", f"trainer.check_val_every_n_epoch={TRAIN_EPOCHS}",
                       f"+trainer.max_time={TRAIN_MAX_TIME}",
                       "logger=csv", f"run_dir={run_dir}"], CAPS["train"]),
        # last.ckpt: the one checkpoint written also when max_time stops training before its validation.
        Step("eval", [*rcnn, "eval", "--weights", str(run_dir / "checkpoints" / "last.ckpt"), *data,
                      "--out", str(work / "eval"), "--json", str(work / "eval.json")],
             CAPS["eval"], lambda log: eval_figures(work / "eval.json")),
    ]


def default_json() -> Path:
    """$OUT/gpu-check.json where $OUT is set (what a lent machine sends back), else under runs/."""
    out = Path(os.environ["OUT"]) if os.environ.get("OUT") else ROOT / "runs" / "gpu-check"
    return out / "gpu-check.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=default_json(), help="where the one JSON file goes")
    parser.add_argument("--bccd", help="BCCD's VOC folder (default: shared/datasets/bccd-voc/BCCD, found as the "
                                       "tests find it)")
    args = parser.parse_args(argv)
    import torch

    info = {"gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "torch": torch.__version__, "cuda": torch.version.cuda, "cpu_cores": os.cpu_count()}
    if info["gpu"] is None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({**info, "status": "no gpu", "steps": []}, indent=2) + "\n")
        print(f"no CUDA GPU visible: nothing to check (torch {torch.__version__}); wrote {args.json}")
        return NO_GPU
    work = ROOT / "runs" / "gpu-check" / "work"    # checkpoints, eval plots: not for the JSON's folder ($OUT)
    shutil.rmtree(work, ignore_errors=True)        # eval must score this run's checkpoint, not an older one
    work.mkdir(parents=True)
    return check(gpu_steps(work, bccd_root(args.bccd)), args.json, info)


if __name__ == "__main__":
    sys.exit(main())
