"""``model.precision=auto`` on the CPU may also run an OpenVINO model compiled from the checkpoint, under the
one rule of inference/precision.py: OpenVINO f32, bf16 (where the hardware runs bf16 natively) or int8
(NNCF, export/int8.py; its float tail at f32, or at bf16 where native: ``PATHS``), whichever is fastest
here while agreeing with the exact model at mAP50 >= MIN_AGREEMENT_MAP50 on the model's own images, and
at least MIN_SPEEDUP times faster than the torch path auto would run otherwise (folded, or torch bf16).
``rcnn predict``, ``rcnn serve`` and ``Detector.load`` load through ``load_fastest``; ``fp32``, ``bf16`` and
``int8`` never touch OpenVINO.

Compiled and measured once, then cached beside the precision decisions (``precision.cache_dir()``) under a
key of the checkpoint (path, size, modification time), the model settings, this CPU, torch's and
OpenVINO's versions: ``KEY.json`` holds the decision, ``KEY/`` the chosen IR (none when torch stays).
Without OpenVINO (the ``export`` extra) or without real images to check on, auto chooses among the torch
paths, as before.

``RCNN_AUTO_OPENVINO=off`` keeps auto on the torch paths without compiling anything (a CI machine that
should not spend the first use's minute; the test suite, which turns it on where it tests it).

Every path is timed one image at a time, as the rule times torch bf16, and the OpenVINO runner that is
measured is the one that then runs: one request using all cores (lowest latency per image).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from .. import hardware
from ..data.samples import Samples, calibration_images
from ..inference.precision import (
    MIN_AGREEMENT_MAP50,
    MIN_SPEEDUP,
    Decision,
    Trial,
    cache_dir,
    cache_key,
    read_cached,
    timed_detections,
    write_cached,
)
from ..inference.predictor import Predictor, check_samples, load_predictor, prepare_predictor
from ..model.source import WeightsSource

DetectFn = Callable[[list[Tensor]], list[dict[str, Tensor]]]
# OpenVINO paths auto may compare -> (the IR each compiles: f32, or int8 quantized from it by NNCF; the
# inference precision hint it runs at). An int8 IR's float parts (box decoding, NMS, the box head) run at
# the hint: f32 as `rcnn export --int8` verifies it, or bf16 where bf16 is native, so that the float tail
# of an int8 model does not run at f32 on a CPU built for int8 and bf16.
PATHS = {"openvino f32": ("f32", "fp32"), "openvino bf16": ("f32", "bf16"),
         "openvino int8": ("int8", "fp32"), "openvino int8 bf16": ("int8", "bf16")}
HINTS = {name: hint for name, (_ir, hint) in PATHS.items()}
IR_NAME = "model.xml"       # the chosen IR in the cache entry's folder (its weights: model.bin)
SWITCH_ENV = "RCNN_AUTO_OPENVINO"
SWITCH = ("on", "off")


def openvino_paths_here() -> list[str]:
    """The OpenVINO paths (``PATHS``) this install and CPU can compile and run: none without OpenVINO (or the
    ONNX exporter its IR is converted from); a bf16 hint only where the hardware runs bf16 natively (else
    emulated, slower); an int8 IR where NNCF is installed. None where ``RCNN_AUTO_OPENVINO=off``."""
    if (switch := os.environ.get(SWITCH_ENV) or "on") not in SWITCH:
        from ..errors import UsageError, nearest_hint

        raise UsageError(f"{SWITCH_ENV}={switch}: {nearest_hint(switch, list(SWITCH))}")
    if switch == "off" or any(importlib.util.find_spec(name) is None for name in ("openvino", "onnx")):
        return []
    return [name for name in PATHS if runs_here(name, nncf=importlib.util.find_spec("nncf") is not None)]


def runs_here(name: str, nncf: bool = True) -> bool:
    """Whether the OpenVINO path ``name`` is worth running on this CPU (its bf16 hint native where it has
    one) with NNCF installed or not (``nncf``: its int8 IR can be made)."""
    ir, hint = PATHS[name]
    return (hint != "bf16" or hardware.current().native_bf16) and (ir != "int8" or nncf)


def compile_key(model_cfg: dict, paths: list[str]) -> str | None:
    """The cache key of auto's OpenVINO decision: ``precision.cache_key`` (weights file, settings, CPU, torch)
    with OpenVINO's and NNCF's versions and the candidate ``paths`` (a decision among fewer is not reused
    where more can run); None for weights that are not a file."""
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "none"

    return cache_key(model_cfg["weights"], model_cfg, "cpu",
                     f"openvino {installed('openvino')}, nncf {installed('nncf')}, paths {', '.join(paths)}")


def load_fastest(cfg: DictConfig, checkpoint: tuple[dict, dict] | None = None,
                 calibration: Sequence[Tensor] = (), typed=None, sources: Sequence[str] | None = None,
                 source: WeightsSource | None = None, say: Callable[[str], None] | None = None,
                 status: Callable[[str], AbstractContextManager] | None = None) -> Predictor:
    """``load_predictor``, where ``model.precision=auto`` may also choose a compiled OpenVINO model. say: gets
    the one line a first use prints (what was compiled and checked, how long it took); status: a spinner
    shown while that runs."""
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    paths = openvino_paths_here() if _may_compile(cfg, source) else []
    key = compile_key(model_cfg, paths) if paths else None
    if key is None:
        return load_predictor(cfg, checkpoint, calibration, typed=typed, sources=sources, source=source)
    predictor = load_predictor(cfg, checkpoint, calibration, typed=typed, sources=sources, source=source,
                               prepare=False)
    samples = check_samples(predictor.dataset, sources)
    cached = read_cached(key)
    if cached is not None and (cached.runs not in HINTS or (cache_dir() / key / IR_NAME).is_file()):
        return _as_decided(predictor, model_cfg, cached, cache_dir() / key / IR_NAME, calibration, samples)
    if not samples():     # nothing to prove a compiled model on: the torch rule says why
        prepare_predictor(predictor, model_cfg, "auto", calibration, samples)
        return predictor
    started = time.perf_counter()
    with (status or _no_status)(f"auto: compiling {', '.join(paths)} from {Path(model_cfg['weights']).name} and "
                                f"checking them on {len(samples().images)} {samples().origin} (once)"):
        decision = compile_and_choose(predictor, model_cfg, paths, samples(), calibration, key)
    seconds = time.perf_counter() - started
    line = (f"auto: compiled {', '.join(paths)} from {Path(model_cfg['weights']).name} and checked them against it "
            f"on {len(samples().images)} {samples().origin} in {seconds:.1f} s, once for this checkpoint, "
            f"settings and CPU (cached in {cache_dir()})")
    (say or predictor.notes.append)(line)
    return _as_decided(predictor, model_cfg, decision, cache_dir() / key / IR_NAME, calibration, samples)


def _no_status(_text: str) -> AbstractContextManager:
    return nullcontext()


def _may_compile(cfg: DictConfig, source: WeightsSource | None) -> bool:
    """auto on the CPU, for a checkpoint file (not an exported one), without TTA (which wraps torch's model)."""
    if str(cfg.model.precision) != "auto" or cfg.model.tta or hardware.resolve_device(cfg.device).type != "cpu":
        return False
    return source is None or not source.exported


def _as_decided(predictor: Predictor, model_cfg: dict, decision: Decision, ir: Path,
                calibration: Sequence[Tensor], samples: Callable[[], Samples]) -> Predictor:
    """The predictor running what ``decision`` says: a compiled IR, else the torch rule's choice (its own
    decision, with why OpenVINO was not taken)."""
    if decision.runs in HINTS:
        from ..inference.exported import OpenVinoDetector

        runner = OpenVinoDetector(ir, "cpu", HINTS[decision.runs], requests=1)
        return replace(predictor, detect=runner.detect, runs_as=decision.runs_as, model=None, decision=decision)
    if predictor.decision is None:       # prepared already where torch was measured beside OpenVINO
        prepare_predictor(predictor, model_cfg, "auto", calibration, samples)
    predictor.decision.reason += f"; {decision.reason}"
    return predictor


@dataclass
class Measured:
    """One path run on the check images: its median seconds per image and agreement with the exact model."""

    name: str
    seconds: float
    agreement: float | None = None
    compared: int = 0

    def agrees(self) -> bool:
        return self.compared > 0 and self.agreement is not None and self.agreement >= MIN_AGREEMENT_MAP50


def time_path(name: str, detect: DetectFn, images: Sequence[Tensor]) -> tuple[list[dict], float]:
    """(detections, median seconds per image) of one path, one image at a time after one warm-up run;
    name: which path, for tests that replace the clock."""
    return timed_detections(detect, images)


def compile_and_choose(predictor: Predictor, model_cfg: dict, paths: list[str], samples: Samples,
                       calibration: Sequence[Tensor], key: str) -> Decision:
    """Compiles ``paths`` from the predictor's exact model, runs them, the exact model and the torch rule's
    choice on ``samples``, and keeps the fastest that agrees if it beats torch by MIN_SPEEDUP. The decision
    is cached with the chosen IR; a failed compile is said and cached as such (torch runs)."""
    from ..eval.agreement import compare_detections

    images, origin = samples.images, samples.origin
    num_classes, threshold = len(predictor.class_names), float(predictor.model.roi_heads.score_thresh)
    reference, exact_s = time_path("exact", predictor.detect, images)
    try:
        work = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=_made(cache_dir())))
    except OSError as err:     # a read-only home: torch runs, and auto tries again next time
        return Decision("auto", "torch", f"OpenVINO is compiled into {cache_dir()}, which cannot be written "
                        f"({err.strerror})")
    try:
        try:
            files = compile_openvino(predictor, paths, work, images, calibration_for(predictor, images))
        except Exception as err:    # a graph that does not trace or convert: torch runs, and says why
            decision = Decision("auto", "torch", f"OpenVINO could not compile this model ({_first_line(err)})")
            if not isinstance(err, OSError):     # a full disk may have room next time
                write_cached(key, decision)
            return decision
        prepare_predictor(predictor, model_cfg, "auto", calibration, lambda: samples)
        torch_name = f"torch {predictor.decision.runs}"
        measured = [Measured(torch_name, time_path(torch_name, predictor.detect, images)[1])]
        for name, ir in files.items():
            from ..inference.exported import OpenVinoDetector

            outputs, seconds = time_path(name, OpenVinoDetector(ir, "cpu", HINTS[name], requests=1).detect, images)
            agreement = compare_detections(reference, outputs, num_classes, threshold)
            measured.append(Measured(name, seconds, agreement.map50, agreement.compared))
        decision = choose(measured, exact_s, len(images), origin)
        if decision.runs in HINTS:
            _keep(files[decision.runs], cache_dir() / key)
        write_cached(key, decision)
        return decision
    finally:
        shutil.rmtree(work, ignore_errors=True)


def choose(measured: list[Measured], exact_s: float, images: int, origin: str) -> Decision:
    """measured[0]: the torch rule's choice; the rest: OpenVINO paths. The fastest OpenVINO path that agrees,
    where it is at least MIN_SPEEDUP times as fast as torch's; else torch, with what each path measured."""
    torch_path, candidates = measured[0], measured[1:]
    agreeing = [m for m in candidates if m.agrees()]
    figures = ", ".join(f"{m.name} {torch_path.seconds / m.seconds:.2f}x"
                        + ("" if m.agrees() else f" but agreement {_map50(m)}") for m in candidates)
    best = min(agreeing, key=lambda m: m.seconds, default=None)
    if best is None or torch_path.seconds / best.seconds < MIN_SPEEDUP:
        return Decision("auto", "torch", f"no OpenVINO path agrees (>= {MIN_AGREEMENT_MAP50}) and is >= "
                        f"{MIN_SPEEDUP}x {torch_path.name} here ({figures})")
    trial = Trial(exact_s / best.seconds, best.agreement, best.compared, images, origin)
    return Decision("auto", best.name, f"the fastest path that agrees (>= {MIN_AGREEMENT_MAP50}): "
                    f"{torch_path.seconds / best.seconds:.2f}x {torch_path.name} ({figures})", trial)


def _map50(measured: Measured) -> str:
    return "n/a (nothing compared)" if measured.agreement is None or not measured.compared \
        else f"{measured.agreement:.3f}"


def calibration_for(predictor: Predictor, check: list[Tensor]) -> list[Tensor]:
    """What int8 calibrates on: the model's training images (as `rcnn export --int8`), else the check images."""
    found = calibration_images(None, predictor.dataset)
    return found.images or list(check)


def compile_openvino(predictor: Predictor, paths: list[str], folder: Path, images: list[Tensor],
                     calibration: list[Tensor]) -> dict[str, Path]:
    """The IRs ``paths`` need (``PATHS``), written into ``folder`` from the predictor's exact model: f32, and
    int8 quantized from it once where a path runs it (at either hint) -> path name -> .xml."""
    from .exporters import write_openvino
    from .int8 import quantize_openvino

    irs = {"f32": write_openvino(predictor, folder / "f32.xml", images[0])}
    if any(PATHS[name][0] == "int8" for name in paths):
        irs["int8"] = quantize_openvino(irs["f32"], folder / "int8.xml", calibration)
    return {name: irs[PATHS[name][0]] for name in paths}


def _keep(ir: Path, folder: Path) -> None:
    """The chosen IR into the cache entry's folder: weights first, so that the .xml names a whole model."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.move(str(ir.with_suffix(".bin")), folder / Path(IR_NAME).with_suffix(".bin"))
    shutil.move(str(ir), folder / IR_NAME)


def _made(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _first_line(err: Exception) -> str:
    return next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)[:200]
