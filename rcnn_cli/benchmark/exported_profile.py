"""``rcnn benchmark --profile --formats onnx,openvino``: the exported files split into the stage profile's
stages (benchmark/profile.py), by the runtimes' own profilers.

- ONNX Runtime: ``SessionOptions.enable_profiling`` writes a JSON trace; each node run is an event
  "<node>_kernel_time" (category "Node", microseconds), each ``session.run`` a "model_run" event. The
  nodes of the timed runs (those after the warmup runs, by their start time) are summed per node. An
  If's event spans its body, whose nodes have events of their own: only the body's are counted.
- OpenVINO: ``PERF_COUNT`` on the compiled model; ``request.get_profiling_info()`` gives each executed
  layer's real time in the last run, read after every timed run.

A node's stage comes from its name. The exporter names a node after the module calls it ran inside
(export/graph.py: "/backbone/body/layer1/...", "/head_2/conv/...", "/postprocess/TopK"; the few ops of
scripted functions, such as torchvision's batched_nms, get their neighbours' scope in
exporters.scope_unnamed_nodes). onnxruntime prefixes a node it merged with the next with "fused ", and
OpenVINO keeps the ONNX names, its inserted reorders named "<source>_<layouts>_<destination>".
``STAGE_SCOPES`` is that one table. What matches nothing (OpenVINO's own constant-folded nodes such as
"Multiply_18358", shape arithmetic at the graph's root) is charged to "other (between stages)", so the
stages always add up to the runtime's own per-node total, and the share of "other" says how much the
names could not place.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from .profile import FPN_STAGE, INFERENCE_ROWS, ROOT_STAGE

# stage -> the scope (first parts of a node name) its nodes run in; a scope called again gets "_1", "_2"
# (the RPN head once per level). In the order of profile.py's rows.
STAGE_SCOPES: tuple[tuple[str, str], ...] = (
    ("transform", "transform"),
    ("backbone body", "backbone/body"),
    (FPN_STAGE, "backbone/fpn"),
    ("RPN head", "head"),
    ("anchor generation", "anchor_generator"),
    ("proposal decode + NMS", "proposals"),
    ("RoI align", "box_roi_pool"),
    ("box head", "box_head"),
    ("box predictor", "box_predictor"),
    ("detection post-processing", "postprocess"),
)
if unknown := {stage for stage, _ in STAGE_SCOPES} - set(INFERENCE_ROWS):
    raise AssertionError(f"STAGE_SCOPES names stages profile.py does not have: {unknown}")
# "/head_2/conv/Conv", onnxruntime's "fused /box_head/fc6/Gemm" (a node it merged with the next),
# OpenVINO's "/head_2/conv/Conv_abcd_acdb_/head_2/..." (a reorder it inserted after a node)
_SCOPE_PATTERNS = [(stage, re.compile(rf"^(fused )?/{re.escape(scope)}(_\d+)?/")) for stage, scope in STAGE_SCOPES]


def stage_of(node: str) -> str:
    """The stage an exported node belongs to, by its name; ROOT_STAGE when no scope matches."""
    return next((stage for stage, pattern in _SCOPE_PATTERNS if pattern.match(node)), ROOT_STAGE)


def by_stage(node_seconds: dict[str, float]) -> dict[str, float]:
    charged: dict[str, float] = defaultdict(float)
    for node, seconds in node_seconds.items():
        charged[stage_of(node)] += seconds
    return charged


# onnxruntime's control-flow nodes: a trace event spans the run of the node's body, whose nodes have
# events of their own (batched_nms's If and its NonMaxSuppression), so it would count them twice.
CONTROL_FLOW_OPS = ("If", "Loop", "Scan")


def onnx_trace_times(trace: list[dict], warmup_runs: int) -> tuple[dict[str, float], list[float]]:
    """An onnxruntime profile trace -> (seconds per node over the runs after the first ``warmup_runs``,
    control-flow nodes left to their bodies' nodes; each of those runs' own duration in seconds)."""
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in trace
                  if e.get("cat") == "Session" and e["name"] == "model_run")
    timed = runs[warmup_runs:]
    nodes: dict[str, float] = defaultdict(float)
    for event in trace:
        if (event.get("cat") != "Node" or not event["name"].endswith("_kernel_time")
                or event["args"].get("op_name") in CONTROL_FLOW_OPS):
            continue
        if any(start <= event["ts"] <= end for start, end in timed):
            nodes[event["name"].removesuffix("_kernel_time")] += event["dur"] / 1e6
    return nodes, [(end - start) / 1e6 for start, end in timed]


def profile_onnx(path: Path, images: list, repeats: int, warmup: int) -> tuple[dict[str, float], list[float], str]:
    """(seconds per node, each run's own seconds, what ran) of ``path`` run by onnxruntime on ``images`` one at a
    time, ``warmup`` passes then ``repeats``, as rcnn predict runs it (one run at a time)."""
    from ..inference.exported import OnnxDetector

    runner = OnnxDetector(path, profile_prefix=path.with_name(f"{path.stem}.profile"))
    for _ in range(warmup + repeats):
        for image in images:
            runner.detect([image])
    trace = Path(runner.session.end_profiling())
    return *onnx_trace_times(json.loads(trace.read_text()), warmup * len(images)), "onnxruntime"


def profile_openvino(path: Path, precision: str, images: list, repeats: int, warmup: int
                     ) -> tuple[dict[str, float], list[float], str]:
    """(seconds per layer, each run's own latency in seconds, what ran) of the IR compiled at ``precision``."""
    from ..inference.exported import OpenVinoDetector

    runner = OpenVinoDetector(path, "cpu", precision, perf_count=True)
    nodes: dict[str, float] = defaultdict(float)
    runs = []
    for turn in range(warmup + repeats):
        for image in images:
            runner.detect([image])
            if turn >= warmup:
                layers, latency_ms = runner.last_profile()
                for layer in layers:
                    nodes[layer.node_name] += layer.real_time.total_seconds()
                runs.append(latency_ms / 1000)
    return nodes, runs, runner.runs_as


def stage_table(node_seconds: dict[str, float], run_seconds: list[float], runs_as: str) -> dict[str, Any]:
    """One exported path's profile, per image: a row per stage (ms, share of the per-node total), the
    per-node total, the runtime's own time per run, and the unplaced nodes that cost the most."""
    runs = len(run_seconds)
    seconds = by_stage(node_seconds)
    total = sum(seconds.values())
    rows = [{"stage": stage, "ms": seconds.get(stage, 0.0) / runs * 1000,
             "share": seconds.get(stage, 0.0) / total if total else 0.0} for stage in INFERENCE_ROWS]
    unplaced = Counter({node: s for node, s in node_seconds.items() if stage_of(node) == ROOT_STAGE})
    return {"runs_as": runs_as, "rows": rows, "total_ms": total / runs * 1000,
            "runtime_run_ms": sum(run_seconds) / runs * 1000, "nodes": len(node_seconds),
            "unplaced_nodes": [{"node": node, "ms": s / runs * 1000} for node, s in unplaced.most_common(5)]}


def stage_measurer(images: list, _exact: Any, _classes: int, repeats: int, warmup: int):
    """For ``exported.exported_figures``: measure(path, precision) -> the file's stage table."""
    def measure(path: Path, precision: str = "fp32") -> dict[str, Any]:
        if path.suffix == ".onnx":
            return stage_table(*profile_onnx(path, images, repeats, warmup))
        return stage_table(*profile_openvino(path, precision, images, repeats, warmup))

    return measure


PROFILED_FORMATS = ("onnx", "openvino")      # the runtimes with a profiler of their own


def profile_exported(model_cfg: dict, images: list, calibration: list, formats: list[str], repeats: int,
                     warmup: int, checkpoint: tuple | None = None) -> dict[str, dict]:
    """The stage tables of the files ``rcnn benchmark --formats`` times (the same writers and int8 twins;
    OpenVINO bf16 where native), for ``formats`` among ``PROFILED_FORMATS``, exported from the exact model
    that ``profile.stage_profile`` times (``run.build_models``: the same seeded or loaded weights)."""
    from .exported import exported_figures
    from .run import build_models

    model = build_models(model_cfg, device="cpu", checkpoint=checkpoint)["ours"]
    return exported_figures(model, model_cfg, images, calibration, [], formats, repeats, warmup, stage_measurer)
