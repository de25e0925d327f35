"""The one rule for reduced precision, for every command and the Python API.

    fp32         the exact eager model.
    bf16, int8   what was asked for, with its agreement with the exact model printed when real
                 images are at hand (``data/samples.py``).
    auto         the folded model (BatchNorm in the convs: the exact arithmetic, faster), or a
                 reduced path (torch bf16; an OpenVINO file's bf16 hint) only where, on this
                 machine, all of these hold:
                   1. the hardware runs it natively (``hardware.current()``), else it is emulated, slower;
                   2. on real images of the model's data it agrees with the exact path at
                      mAP50 >= MIN_AGREEMENT_MAP50, with at least one detection compared;
                   3. on those images it runs at least MIN_SPEEDUP times faster.
                 Without real images, auto stays exact and says why.

The decision and its figures are printed once and cached per weights file and machine, so a second
run does not measure again. A comparison in which the exact path found nothing is no proof.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor

from .. import hardware, version
from ..data.samples import Samples
from ..timing import timed_each

MIN_AGREEMENT_MAP50 = 0.98
# Rounding costs a little accuracy, so a reduced path must buy a clear gain, not a tie.
MIN_SPEEDUP = 1.1
PRECISIONS = ("auto", "fp32", "bf16", "int8")
CACHE_ENV = "RCNN_CACHE_DIR"
DetectFn = Callable[[list[Tensor]], list[dict[str, Tensor]]]


@dataclass
class Trial:
    """A reduced path run beside the exact one on the same images."""

    speedup: float           # median exact ms/img over median reduced ms/img
    agreement: float | None  # mAP50 of the reduced path's detections against the exact path's
    compared: int            # exact detections compared (above the score threshold)
    images: int
    origin: str              # where the images came from


@dataclass
class Decision:
    requested: str           # auto, fp32, bf16, int8
    runs: str                # what runs: fp32, folded, bf16, int8
    reason: str
    trial: Trial | None = None
    cached: bool = False

    @property
    def runs_as(self) -> str:
        """What runs, for the user: "fp32", "bf16", "auto: folded"."""
        return self.runs if self.requested == self.runs else f"{self.requested}: {self.runs}"

    def line(self) -> str:
        """One line for the user: what runs, why, and the figures behind it."""
        text = f"precision {self.requested}: runs {self.runs}; {self.reason}"
        if self.trial is not None:
            t = self.trial
            agreement = "n/a" if t.agreement is None else f"{t.agreement:.3f}"
            text += (f" (measured: {t.speedup:.2f}x the exact path's speed, agreement mAP50 {agreement} on "
                     f"{t.compared} detections in {t.images} {t.origin}{'; cached' if self.cached else ''})")
        return text


def measure(exact: DetectFn, reduced: DetectFn, images: Sequence[Tensor], num_classes: int,
            score_threshold: float, origin: str) -> Trial:
    """Both paths on the same images, one image at a time, after one untimed warm-up run each."""
    from ..eval.agreement import compare_detections

    reference, exact_s = timed_detections(exact, images)
    candidate, reduced_s = timed_detections(reduced, images)
    agreement = compare_detections(reference, candidate, num_classes, score_threshold)
    return Trial(exact_s / max(reduced_s, 1e-9), agreement.map50, agreement.compared, len(images), origin)


def timed_detections(detect: DetectFn, images: Sequence[Tensor]) -> tuple[list[dict], float]:
    """(detections on the CPU, median seconds per image) of one path, one image at a time after one
    untimed warm-up run: how every path the rules compare is timed."""
    return timed_each(lambda image: {k: v.cpu() for k, v in detect([image])[0].items()}, images, warmup=1)


def native_reduced_path(device_type: str) -> str | None:
    """The reduced path auto may consider here: bf16 where the hardware runs it natively."""
    found = hardware.current()
    native = found.cuda_bf16 if device_type == "cuda" else found.native_bf16
    return "bf16" if native else None


def decide(requested: str, device_type: str, samples: Callable[[], Samples], trial: Callable[[], Trial] | None,
           cache_key: str | None = None, candidate: str | None = "bf16", exact: str = "folded") -> Decision:
    """What runs for ``model.precision=requested``. samples: gives the real images to check on
    (called only when a check is due); trial: runs the reduced path (``candidate``) beside the exact
    one on them; candidate=None: no reduced path exists for this runner (an int8 OpenVINO file);
    exact: what auto runs otherwise (folded for torch models, fp32 for an OpenVINO file)."""
    if requested not in PRECISIONS:
        from ..errors import UsageError, nearest_hint

        raise UsageError(f"model.precision={requested}: {nearest_hint(requested, PRECISIONS)}")
    if requested == "fp32":
        return Decision("fp32", "fp32", "the exact model")
    if requested != "auto":
        measured = trial() if (trial and samples()) else None
        why = "as asked" if measured else f"as asked; agreement not measured ({samples().origin})"
        return Decision(requested, requested, why, measured)
    if candidate is None or native_reduced_path(device_type) is None:
        why = "an int8 file keeps its float parts exact" if candidate is None else \
            f"{hardware.current().describe()}: no native bf16, which would be emulated and slower"
        return Decision("auto", exact, why)
    if cache_key and (cached := read_cached(cache_key)):
        return cached
    if not samples() or trial is None:
        return Decision("auto", exact, f"bf16 was not checked against the exact model: {samples().origin}; "
                        "pass --images to let auto measure it")
    measured = trial()
    takes, reason = verdict(measured)
    decision = Decision("auto", candidate if takes else exact, reason, measured)
    if cache_key:
        write_cached(cache_key, decision)
    return decision


def verdict(trial: Trial) -> tuple[bool, str]:
    """Whether auto takes the reduced path, and why, from the trial's two figures."""
    if trial.compared == 0 or trial.agreement is None:
        return False, ("the exact path found nothing to compare on these images (a check that compared nothing "
                       "proves nothing): pass --images with pictures the model detects objects in")
    if trial.agreement < MIN_AGREEMENT_MAP50:
        return False, f"bf16 would move detections: agreement below {MIN_AGREEMENT_MAP50}"
    if trial.speedup < MIN_SPEEDUP:
        return False, f"bf16 is not enough faster here (needs {MIN_SPEEDUP}x)"
    return True, f"bf16 agrees (>= {MIN_AGREEMENT_MAP50}) and is faster (>= {MIN_SPEEDUP}x)"


def cache_key(weights: str | Path | None, model_cfg: dict, device_type: str, runner: str = "torch") -> str | None:
    """Per weights file (path, size, modification time), model settings, machine, runner and versions;
    None for weights that are not a file (nothing to key a cache on)."""
    if not weights or not Path(str(weights)).is_file():
        return None
    path = Path(str(weights)).resolve()
    stat = path.stat()
    found = hardware.current()
    # our version too: the paths measured change between versions (the bf16 path's fp32 parts)
    parts = [str(path), stat.st_size, stat.st_mtime_ns, {k: str(v) for k, v in sorted(model_cfg.items())},
             found.profile, found.cpu_model, sorted(found.cpu_flags), torch.__version__, device_type, runner,
             version.__version__]
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:24]


def cache_dir() -> Path:
    base = os.environ.get(CACHE_ENV) or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rcnn-cli"
    return Path(base) / "precision"


def read_cached(key: str) -> Decision | None:
    try:
        stored = json.loads((cache_dir() / f"{key}.json").read_text())
        trial = Trial(**stored.pop("trial")) if stored.get("trial") else None
        return Decision(**{**stored, "trial": trial, "cached": True})
    except (OSError, ValueError, TypeError, KeyError):   # none yet, or from another version: measure again
        return None


def write_cached(key: str, decision: Decision) -> None:
    from ..files import write_json

    try:
        write_json(cache_dir() / f"{key}.json", {**asdict(decision), "cached": False})
    except OSError:      # a read-only home: the decision stands, it is only measured again next time
        pass
