"""``rcnn benchmark --profile``: where the time of a detection and of a training step goes, stage by stage.

Stages, in the order a detection runs them (one image; B images in a training batch):
    transform                    (3, H0, W0) uint8/float -> normalised, resized, padded batch (B, 3, H, W)
    backbone body                (B, 3, H, W) -> C2..C5: (B, C_l, H/4, W/4) .. (B, C_l, H/32, W/32)
    FPN                          C2..C5 -> P2..P6: (B, F, H/4, W/4) .. (B, F, H/64, W/64), F = fpn_channels
    RPN head                     P2..P6 -> objectness (B, A, 1) and deltas (B, A, 4); A anchors over all levels
    anchor generation            (A, 4) anchor boxes (cached per feature-map size)
    proposal decode + NMS        deltas + anchors -> boxes; best per level, clip, NMS -> (B, P, 4) proposals
    RoI align                    (R, F, 7, 7) pooled features; R = all proposals, or the sampled ones (training)
    box head                     (R, F * 49) -> (R, 1024): two fully connected layers (or convs + FC)
    box predictor                (R, 1024) -> class logits (R, C + 1) and deltas (R, 4(C + 1))
    detection post-processing    decode, score threshold, class-aware NMS, boxes back to picture pixels
    other (between stages)       the detector's own glue (e.g. the channels_last copy of the batch)
A training step adds anchor matching + sampling (RPN), proposal matching + sampling (RoI heads), the
losses, the optimizer step, and data loading: the wait for the next batch of the real DataLoader.

How it measures:
- Forward: forward pre/post hooks on the stage's modules (methods and callables that are not modules,
  such as the matcher, are wrapped on the instance) open and close a stage on a stack; the clock's
  advance between two hooks is charged to the innermost open stage. The stages therefore partition the
  forward: no gap, nothing counted twice. The FPN begins at the first FPN layer to run and lasts until
  the backbone returns: in the int8 model the backbone is one FX graph whose FPN is not called as a
  module, only its layers are (and the body is done before the FPN starts, which needs C5 first).
- FLOPs: the same stack with ``FlopCounterMode``'s running total as the clock, in a pass of its own
  (counting slows every op). It counts convolutions and matrix products (what torchvision's GFLOPS
  figures count); RoI align, NMS and elementwise ops count 0. FlopCounterMode cannot run quantized
  tensors, so the int8 path shows the folded model's counts on the same images (same layers and shapes;
  the box head's share moves with the proposal count).
- Backward: autograd node pre-hooks (``torch.autograd.graph.Node.register_prehook``, as torch's own
  aot_autograd logging uses them). On the CPU the engine runs every node on the calling thread one
  after another, so each node is charged from its pre-hook to the next node's, a partition of the
  backward again. A node belongs to the stage that was open when the forward created it (its autograd
  sequence number against the numbers noted at each change of stage). Module backward hooks were not
  used: they see only tensors passed directly, where this detector's modules pass lists, dicts and
  dataclasses, and matching and the losses are not modules at all.
- Peak: cores x the nominal clock x the FLOPs per cycle of the CPU's widest multiply-add for the stage's
  precision (``PER_CYCLE``), from ``hardware.current()``, so ``RCNN_HARDWARE`` changes the estimate (and
  only the estimate: what runs is measured on the CPU at hand).
Everything runs on the CPU: per-stage times of GPU kernels need the CUDA profiler.
"""

from __future__ import annotations

import bisect
import contextlib
import copy
import re
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..errors import UsageError
from ..hardware import Hardware, cpu_count, current, training_autocast_dtype
from ..inference.fast import use_channels_last
from ..inference.quantize import quantize_int8
from ..timing import timed
from ..training.optim import build_optimizer
from .machine import machine_info
from .run import as_float, build_models, int8_available

ROOT_STAGE = "other (between stages)"
FPN_STAGE = "FPN"
# stage -> what runs it, as attribute paths from the detector: a module (forward hooks) or a method or
# callable attribute (wrapped on the instance). A path a model lacks is skipped (torchvision's detector,
# profiled beside ours for inference, shares the module names but not every method). In row order.
STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("transform", ("transform",)),
    ("backbone body", ("backbone",)),
    (FPN_STAGE, ()),                       # every module under the backbone with an "fpn" in its name
    ("RPN head", ("rpn.head",)),
    ("anchor generation", ("rpn.anchor_generator",)),
    ("proposal decode + NMS", ("rpn",)),
    ("anchor matching + sampling", ("rpn.matcher.match", "rpn.sampler")),
    ("proposal matching + sampling", ("roi_heads.matcher.match", "roi_heads.sampler")),
    ("RoI align", ("roi_heads.box_roi_pool",)),
    ("box head", ("roi_heads.box_head",)),
    ("box predictor", ("roi_heads.box_predictor",)),
    ("losses", ("rpn.losses", "roi_heads.losses")),
    ("detection post-processing", ("roi_heads", "transform.to_original", "transform.postprocess")),
)
TRAINING_ONLY = ("anchor matching + sampling", "proposal matching + sampling", "losses")
INFERENCE_ROWS = tuple(s for s, _ in STAGES if s not in TRAINING_ONLY) + (ROOT_STAGE,)
TRAINING_ROWS = ("data loading", *(s for s, _ in STAGES if s != "detection post-processing"), ROOT_STAGE,
                 "optimizer step")
# Weights barely move between the profiled steps, so every step costs what the first does.
PROFILE_LR = 1e-5

# FLOPs per cycle per core of the widest multiply-add, by precision (a multiply-add is 2, int8 ones too);
# (CPU flag, precision, figure), best first. Intel's AMX overview ("Intel Advanced Matrix Extensions",
# intel.com): AMX does 2,048 int8 ops and 1,024 bf16 FLOPs per cycle per core, against 256 int8 ops with
# AVX-512 VNNI and 64 fp32 FLOPs with AVX-512 FMA (two 512-bit FMA units: 2 x 16 lanes x 2). AVX2 FMA: two
# 256-bit units, 2 x 8 x 2 = 32 (Intel's Optimization Reference Manual, Haswell onwards). Derived here:
# avx512_bf16 without AMX, VDPBF16PS does two bf16 products per fp32 lane, 2 x 64 = 128; AVX-VNNI is
# AVX-512 VNNI at half the width, 128; int8 on AVX2 without VNNI (vpmaddubsw + vpmaddwd) about 2x fp32, 64.
# Nominal: AMD Zen 4 runs 512-bit instructions as two 256-bit halves, so its AVX-512 rows are half this.
# Without a native bf16 row, bf16 is computed in fp32 (the fp32 figure applies).
PER_CYCLE: tuple[tuple[str, str, int], ...] = (
    ("amx_bf16", "bf16", 1024), ("avx512_bf16", "bf16", 128),
    ("amx_int8", "int8", 2048), ("avx512_vnni", "int8", 256), ("avx_vnni", "int8", 128), ("avx2", "int8", 64),
    ("avx512f", "fp32", 64), ("avx2", "fp32", 32),
)
PRECISIONS = ("fp32", "bf16", "int8")


def flops_per_cycle(precision: str, flags: frozenset[str]) -> int | None:
    for flag, row_precision, figure in PER_CYCLE:
        if row_precision == precision and flag in flags:
            return figure
    return flops_per_cycle("fp32", flags) if precision == "bf16" else None


def nominal_clock_ghz(cpuinfo: Path = Path("/proc/cpuinfo")) -> tuple[float | None, str]:
    """(GHz, where it came from): the rated clock in the model name ("@ 2.40GHz"), else the first core's
    "cpu MHz" (what the kernel reported, taken as nominal; turbo and throttling are not in it)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return None, "no /proc/cpuinfo"
    if rated := re.search(r"^model name\s*:.*@\s*([\d.]+)\s*GHz", text, re.M):
        return float(rated.group(1)), "the rated clock in the CPU's model name"
    if reported := re.search(r"^cpu MHz\s*:\s*([\d.]+)", text, re.M):
        return float(reported.group(1)) / 1000, "/proc/cpuinfo 'cpu MHz', taken as nominal"
    return None, "no clock in /proc/cpuinfo"


def peak(hardware: Hardware | None = None) -> dict[str, Any]:
    """This CPU's nominal peak per precision: cores x clock x FLOPs per cycle (``PER_CYCLE``)."""
    hardware = hardware or current()
    clock, source = nominal_clock_ghz()
    cores = cpu_count()
    per_cycle = {p: flops_per_cycle(p, hardware.cpu_flags) for p in PRECISIONS}
    return {"hardware": hardware.describe(), "cores": cores, "clock_ghz": clock, "clock_source": source,
            "flops_per_cycle": per_cycle, "torch_threads": torch.get_num_threads(),
            "gflop_per_s": {p: cores * clock * f for p, f in per_cycle.items() if f and clock}}


class StageClock:
    """Charges what ``read`` advances by (seconds, FLOPs) to the innermost open stage. With
    ``autograd_marks`` it notes, at each change of stage, the autograd sequence number from which on
    new graph nodes belong to the stage now open (``backward_by_stage`` reads them)."""

    def __init__(self, read: Callable[[], float], autograd_marks: bool = False):
        self.read = read
        self.open: list[str] = []
        self.charged: dict[str, float] = defaultdict(float)
        self.marks: list[tuple[int, str]] | None = [] if autograd_marks else None
        self.last = read()

    def enter(self, stage: str) -> int:
        self._charge()
        depth = len(self.open)
        self.open.append(stage)
        self._mark()
        return depth

    def leave(self, depth: int) -> None:
        """Close every stage opened since ``enter`` returned ``depth``."""
        self._charge()
        del self.open[depth:]
        self._mark()

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        depth = self.enter(name)
        try:
            yield
        finally:
            self.leave(depth)

    def _charge(self) -> None:
        now = self.read()
        if self.open:
            self.charged[self.open[-1]] += now - self.last
        self.last = now

    def _mark(self) -> None:
        if self.marks is not None:
            self.marks.append((torch.autograd._get_sequence_nr(), self.open[-1] if self.open else ROOT_STAGE))


def _lookup(root: Any, path: str) -> Any:
    for part in path.split(".") if path else ():
        root = getattr(root, part, None)
    return root


def attachments(model: nn.Module) -> list[tuple[str, Any, str, Any]]:
    """(stage, owner, attribute, what runs) of every ``STAGES`` entry this model has."""
    found = []
    for stage, paths in STAGES:
        for path in paths:
            owner_path, _, name = path.rpartition(".")
            owner = _lookup(model, owner_path)
            if owner is not None and getattr(owner, name, None) is not None:
                found.append((stage, owner, name, getattr(owner, name)))
    return found


def fpn_modules(model: nn.Module) -> list[nn.Module]:
    backbone = getattr(model, "backbone", None)
    return [] if backbone is None else [m for name, m in backbone.named_modules() if "fpn" in name.split(".")]


@contextlib.contextmanager
def instrumented(model: nn.Module, clock: StageClock) -> Iterator[None]:
    """Within the block ``model``'s stages charge ``clock``; everything is put back after."""
    undo = _hook_module(model, ROOT_STAGE, clock)
    for stage, owner, name, target in attachments(model):
        undo += (_hook_module(target, stage, clock) if isinstance(target, nn.Module)
                 else _wrap_callable(owner, name, target, stage, clock))

    def fpn_begins(_module, _args):
        if clock.open and clock.open[-1] != FPN_STAGE:
            clock.enter(FPN_STAGE)          # closed when the backbone returns (its post-hook unwinds)

    undo += [m.register_forward_pre_hook(fpn_begins).remove for m in fpn_modules(model)]
    try:
        yield
    finally:
        for step in reversed(undo):
            step()


def _hook_module(module: nn.Module, stage: str, clock: StageClock) -> list[Callable[[], None]]:
    depths: list[int] = []

    def before(_module, _args):
        depths.append(clock.enter(stage))

    def after(_module, _args, _output):
        clock.leave(depths.pop())

    handles = [module.register_forward_pre_hook(before), module.register_forward_hook(after, always_call=True)]
    return [handle.remove for handle in handles]


def _wrap_callable(owner: Any, name: str, target: Callable, stage: str, clock: StageClock
                   ) -> list[Callable[[], None]]:
    own = name in vars(owner)      # an instance attribute (a sampler object) rather than a method

    def charged(*args, **kwargs):
        depth = clock.enter(stage)
        try:
            return target(*args, **kwargs)
        finally:
            clock.leave(depth)

    setattr(owner, name, charged)
    return [lambda: setattr(owner, name, target) if own else delattr(owner, name)]


def stage_precisions(model: nn.Module) -> dict[str, str]:
    """stage -> the precision its weighted layers run in: int8 where a quantized layer is its own,
    bf16 where a bf16 weight is, else fp32. A stage owns its modules' layers minus those of stages
    nested inside (the backbone minus its FPN)."""
    roots: dict[str, list[nn.Module]] = defaultdict(list)
    for stage, _owner, _name, target in attachments(model):
        if isinstance(target, nn.Module):
            roots[stage].append(target)
    roots[FPN_STAGE] += fpn_modules(model)
    roots[ROOT_STAGE].append(model)
    claimed = {id(m) for modules in roots.values() for m in modules}
    return {stage: _precision_of([m for root in modules for m in _own_layers(root, claimed)])
            for stage, modules in roots.items()}


def _own_layers(root: nn.Module, claimed: set[int]) -> Iterator[nn.Module]:
    yield root
    for child in root.children():
        if id(child) not in claimed:
            yield from _own_layers(child, claimed)


def _precision_of(modules: list[nn.Module]) -> str:
    if any("quantized" in type(m).__module__ for m in modules):
        return "int8"
    if any(p.dtype == torch.bfloat16 for m in modules for p in m.parameters(recurse=False)):
        return "bf16"
    return "fp32"


def time_inference(model: nn.Module, images: list[torch.Tensor], repeats: int, warmup: int
                   ) -> tuple[dict[str, float], float]:
    """(seconds per image by stage, seconds per image of the whole forward without hooks): means over
    ``repeats`` passes over ``images`` one at a time, hooked and plain passes taking turns."""
    def detect_all():
        return [model([image]) for image in images]

    clock, plain = StageClock(time.perf_counter), 0.0
    with torch.inference_mode():
        for _ in range(warmup):
            detect_all()
        for _ in range(repeats):
            with instrumented(model, clock):
                detect_all()
            plain += timed(detect_all, 1, 0)[0]
    runs = repeats * len(images)
    return {stage: seconds / runs for stage, seconds in clock.charged.items()}, plain / runs


def count_inference_flops(model: nn.Module, images: list[torch.Tensor]) -> dict[str, float]:
    """FLOPs per image by stage (mean over ``images``)."""
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        clock = StageClock(counter.get_total_flops)
        with instrumented(model, clock):
            for image in images:
                model([image])
    return {stage: flops / len(images) for stage, flops in clock.charged.items()}


def profile_inference(models: dict[str, nn.Module], images: list[torch.Tensor], repeats: int, warmup: int,
                      peak_rates: dict[str, float], say: Callable[[str], None] = lambda _line: None) -> dict[str, dict]:
    """path -> its stage rows and totals, per image. int8 takes the folded model's FLOP counts."""
    floats, profiles, flops = as_float(images), {}, {}
    for name, model in models.items():
        say(f"profile: inference, {name}")
        flops[name] = flops["ours_fast"] if name == "ours_int8" else count_inference_flops(model, floats)
        seconds, plain = time_inference(model, floats, repeats, warmup)
        rows = stage_rows(INFERENCE_ROWS, seconds, {}, flops[name], stage_precisions(model), peak_rates)
        profiles[name] = {"rows": rows, "total_ms": sum(seconds.values()) * 1000, "plain_forward_ms": plain * 1000,
                          "flops_counted_on": "ours_fast" if name == "ours_int8" else name}
    return profiles


def stage_rows(order: tuple[str, ...], forward: dict[str, float], backward: dict[str, float],
               flops: dict[str, float], precisions: dict[str, str], peak_rates: dict[str, float]) -> list[dict]:
    """One row per stage: ms (forward, backward where measured), share of the total, GFLOP, the
    precision its layers run in, the achieved GFLOP/s and its share of that precision's peak."""
    total = sum(forward.values()) + sum(backward.values())
    rows = []
    for stage in order:
        seconds = forward.get(stage, 0.0) + backward.get(stage, 0.0)
        gflop = flops.get(stage, 0.0) / 1e9
        precision = precisions.get(stage, "fp32")
        rate = gflop / seconds if gflop and seconds > 0 else None
        row = {"stage": stage, "ms": seconds * 1000, "share": seconds / total if total else 0.0, "gflop": gflop,
               "precision": precision, "gflop_per_s": rate,
               "peak_share": rate / peak_rates[precision] if rate and precision in peak_rates else None}
        if backward:
            row.update(forward_ms=forward.get(stage, 0.0) * 1000, backward_ms=backward.get(stage, 0.0) * 1000)
        rows.append(row)
    return rows


def graph_nodes(root: Any) -> Iterator[Any]:
    """Every autograd node reachable from ``root`` (a loss's grad_fn), once."""
    seen, stack = {root}, [root]
    while stack:
        node = stack.pop()
        yield node
        for child, _ in node.next_functions:
            if child is not None and child not in seen:
                seen.add(child)
                stack.append(child)


def backward_by_stage(loss: torch.Tensor, marks: list[tuple[int, str]], read: Callable[[], float]
                      ) -> dict[str, float]:
    """``loss.backward()`` with what ``read`` advances by charged to the forward stage of each node."""
    starts = [sequence for sequence, _ in marks]
    timeline: list[tuple[float, str]] = []
    handles = []
    for node in graph_nodes(loss.grad_fn):
        if "AccumulateGrad" in node.name():
            continue        # charged to the node that produced the gradient, which runs just before
        index = bisect.bisect_right(starts, node._sequence_nr()) - 1
        stage = marks[index][1] if index >= 0 else ROOT_STAGE
        handles.append(node.register_prehook(lambda _grads, stage=stage: timeline.append((read(), stage))))
    start = read()
    try:
        loss.backward()
    finally:
        end = read()
        for handle in handles:
            handle.remove()
    charged: dict[str, float] = defaultdict(float)
    if timeline:
        charged[timeline[0][1]] += timeline[0][0] - start        # the engine's start, before the first node
    for (at, stage), (until, _) in zip(timeline, [*timeline[1:], (end, "")]):
        charged[stage] += until - at
    return charged


def endless(loader: Any) -> Iterator[Any]:
    """The loader's batches over and over; one line where it has none (rather than waiting forever)."""
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise UsageError("--profile: the dataset has no training images to time a training step on; "
                             "add --no-train, or name a dataset with a train split")


def profile_step(model: nn.Module, batches: Iterator, optimizer: torch.optim.Optimizer, read: Callable[[], float],
                 autocast: torch.dtype | None) -> tuple[dict[str, float], dict[str, float]]:
    """One training step as ``rcnn train`` takes it: (forward by stage, with data loading, the loss sum and
    the optimizer step; backward by stage), in what ``read`` advances by."""
    clock = StageClock(read, autograd_marks=True)
    with clock.stage("data loading"):
        images, targets = next(batches)
    with instrumented(model, clock), torch.autocast("cpu", dtype=autocast or torch.float32,
                                                    enabled=autocast is not None):
        losses = model(images, targets)
        with clock.stage("losses"):
            loss = sum(losses.values())
    backward = backward_by_stage(loss, clock.marks, read)
    with clock.stage("optimizer step"):
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return dict(clock.charged), backward


def profile_training(model: nn.Module, loader: Any, optim_cfg: dict, repeats: int, warmup: int,
                     autocast: torch.dtype | None, peak_rates: dict[str, float]) -> dict[str, Any]:
    """Stage rows of a training step (ms per step, mean over ``repeats`` after ``warmup`` steps; FLOPs
    from one more step under FlopCounterMode). ``model`` trains in place."""
    model.train()
    optimizer = build_optimizer(model, optim_cfg, PROFILE_LR)
    batches = endless(loader)
    forward: dict[str, float] = defaultdict(float)
    backward: dict[str, float] = defaultdict(float)
    for step in range(warmup + repeats):
        parts = profile_step(model, batches, optimizer, time.perf_counter, autocast)
        for total, part in zip((forward, backward), parts):
            for stage, seconds in part.items():
                total[stage] += seconds / repeats if step >= warmup else 0.0
    with FlopCounterMode(display=False) as counter:
        flops_forward, flops_backward = profile_step(model, batches, optimizer, counter.get_total_flops, autocast)
    flops = {stage: flops_forward.get(stage, 0) + flops_backward.get(stage, 0)
             for stage in {*flops_forward, *flops_backward}}
    # Autocast runs every convolution and matrix product (all that FLOPs count) in its dtype.
    precision = "bf16" if autocast == torch.bfloat16 else "fp32"
    rows = stage_rows(TRAINING_ROWS, forward, backward, flops, dict.fromkeys(TRAINING_ROWS, precision), peak_rates)
    return {"rows": rows, "total_ms": sum(r["ms"] for r in rows), "precision": precision}


def train_loader(cfg: Any, batch: int) -> Any:
    """The real training DataLoader of ``cfg``'s dataset (its augmentation and workers), ``batch`` images a step."""
    from omegaconf import OmegaConf

    from ..data.pipeline.datamodule import DetectionDataModule

    return DetectionDataModule(OmegaConf.merge(cfg, {"dataset": {"batch_size": batch}})).train_dataloader()


def profile_training_paths(cfg: Any, model: nn.Module, batch: int, repeats: int, warmup: int,
                           peak_rates: dict[str, float], say: Callable[[str], None] = lambda _line: None
                           ) -> dict[str, dict]:
    """Our fp32 step and the step as ``rcnn train`` takes it (channels_last, autocast where it pays)."""
    from omegaconf import OmegaConf

    loader = train_loader(cfg, batch)
    optim_cfg = OmegaConf.to_container(cfg.optim, resolve=True)
    say("profile: training step, ours fp32")
    profiles = {"ours": profile_training(copy.deepcopy(model), loader, optim_cfg, repeats, warmup, None, peak_rates)}
    say("profile: training step, as rcnn train runs it")
    as_trained = use_channels_last(copy.deepcopy(model))
    profiles["ours_train"] = profile_training(as_trained, loader, optim_cfg, repeats, warmup,
                                              training_autocast_dtype("cpu"), peak_rates)
    for profile in profiles.values():
        profile["batch"] = batch
    return profiles


def stage_profile(cfg: Any, images: list[torch.Tensor], calibration: list[torch.Tensor], repeats: int = 3,
                  warmup: int = 1, train: bool = True, batch: int = 2, checkpoint: tuple | None = None,
                  say: Callable[[str], None] = lambda _line: None) -> dict[str, Any]:
    """The stage profile of every torch path ``rcnn benchmark`` builds (torchvision's twin, ours fp32,
    folded, bf16 where native, int8) on ``images`` (uint8 (3, H, W)), and with ``train`` of a training
    step on batches of ``cfg``'s training data. On the CPU, whatever ``device`` says. ``say``: progress.
    The exported files' stages: benchmark/exported_profile.py."""
    from omegaconf import OmegaConf

    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    models = build_models(model_cfg, device="cpu", checkpoint=checkpoint)
    if int8_available():
        models["ours_int8"] = quantize_int8(copy.deepcopy(models["ours"]), calibration)
    estimate = peak()
    result = {"machine": machine_info(), "peak": estimate, "model": model_cfg["name"],
              "min_size": model_cfg["min_size"], "max_size": model_cfg["max_size"], "images": len(images),
              "repeats": repeats, "warmup": warmup}
    result["inference"] = profile_inference(models, images, repeats, warmup, estimate["gflop_per_s"], say)
    if train:
        result["training"] = profile_training_paths(cfg, models["ours"], batch, repeats, warmup,
                                                    estimate["gflop_per_s"], say)
    return result


def table_rows(profile: dict) -> tuple[list[str], list[list[str]]]:
    """(headers, cells) of one path's rows, as the command prints them and the docs show them."""
    training = "forward_ms" in profile["rows"][0]
    headers = ["stage", *(["forward ms", "backward ms"] if training else []), "ms" if training else "ms/img",
               "share", "GFLOP", "precision", "GFLOP/s", "% of peak"]
    cells = []
    for row in profile["rows"]:
        times = [f"{row['forward_ms']:.1f}", f"{row['backward_ms']:.1f}"] if training else []
        rate, share = row["gflop_per_s"], row["peak_share"]
        # the precision of the FLOPs counted: a stage without any (data loading, NMS) shows none
        cells.append([row["stage"], *times, f"{row['ms']:.1f}", f"{row['share']:.1%}", f"{row['gflop']:.2f}",
                      row["precision"] if row["gflop"] else "", "" if rate is None else f"{rate:.1f}",
                      "" if share is None else f"{share:.1%}"])
    return headers, cells
