"""The stage profile of exported files (``rcnn benchmark --profile --formats onnx,openvino``,
benchmark/exported_profile.py): node names map to the stage profile's stages, the exported graph names
every node that computes something after its stage, and each runtime's stages add up to the node times
its own profiler reported, with the convolution and head stages placed (not left in "other")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import TINY_TRAIN

from rcnn_cli.benchmark import exported_profile
from rcnn_cli.benchmark.profile import INFERENCE_ROWS, ROOT_STAGE


@pytest.mark.parametrize("node, stage", [
    ("/transform/Resize", "transform"),
    ("/backbone/body/layer1/layer1.0/conv1/Conv", "backbone body"),
    ("/backbone/fpn/layer_blocks.2/Conv", "FPN"),
    ("/head/conv/conv.0/conv.0.0/Conv", "RPN head"),
    ("/head_3/cls_logits/Conv", "RPN head"),                       # the head called again, on level 3
    ("/anchor_generator_2/Range", "anchor generation"),
    ("/proposals_5/If_1947", "proposal decode + NMS"),
    ("/box_roi_pool/RoiAlign", "RoI align"),
    ("fused /box_head/fc6/Gemm", "box head"),                      # onnxruntime merged it with its Relu
    ("/box_predictor/cls_score/Gemm", "box predictor"),
    ("/postprocess/NonMaxSuppression", "detection post-processing"),
    ("/head_2/conv/conv.0/conv.0.0/Conv_abcd_acdb_/head_2/Sigmoid", "RPN head"),    # an OpenVINO reorder
    ("Multiply_18358", ROOT_STAGE),                                # OpenVINO's own, constant-folded
    ("ReorderOutput_token_312", ROOT_STAGE),                       # onnxruntime's layout change
    ("/Shape_3", ROOT_STAGE),
    ("/heads/Conv", ROOT_STAGE),                                   # a scope that only begins like one
    ("/box_head_extra/Gemm", ROOT_STAGE),
])
def test_node_names_map_to_the_stage_profiles_stages(node, stage):
    assert exported_profile.stage_of(node) == stage


def test_an_onnx_trace_counts_each_node_of_the_timed_runs_once():
    """A hand-written trace in onnxruntime's format: a warm-up run, then a timed run in which an If (its
    event spanning its body) runs a NonMaxSuppression."""
    def node(name, op, ts, dur):
        return {"cat": "Node", "name": f"{name}_kernel_time", "ts": ts, "dur": dur, "args": {"op_name": op}}

    trace = [
        {"cat": "Session", "name": "model_run", "ts": 0, "dur": 100},
        node("/backbone/body/conv1/Conv", "Conv", 10, 50),
        {"cat": "Session", "name": "model_run", "ts": 200, "dur": 120},
        node("/backbone/body/conv1/Conv", "Conv", 210, 40),
        node("/proposals_5/If_1947", "If", 260, 30),
        node("/proposals_5/NonMaxSuppression_1974", "NonMaxSuppression", 265, 20),
        {"cat": "Node", "name": "/proposals_5/If_1947_fence_before", "ts": 259, "dur": 1, "args": {}},
    ]
    nodes, runs = exported_profile.onnx_trace_times(trace, warmup_runs=1)
    assert nodes == {"/backbone/body/conv1/Conv": 40e-6, "/proposals_5/NonMaxSuppression_1974": 20e-6}
    assert runs == [120e-6]


def test_the_exported_graph_names_each_op_after_its_stage(tmp_path):
    """On the graph our export writes: RoI pooling, both NMS (the RPN's inside torchvision's scripted
    batched_nms, named by exporters.scope_unnamed_nodes), the resize and the heads' layers land in their stages."""
    import onnx

    from rcnn_cli import Detector
    from rcnn_cli.export.pipeline import write_file
    from rcnn_cli.inference.predictor import eager_predictor

    model = Detector(model="resnet18_fpn", num_classes=3, min_size=64, max_size=64, fpn_channels=64).model.eval()
    detector = eager_predictor(model, {"backbone": "resnet18_fpn", "min_size": 64, "max_size": 64,
                                       "box_score_thresh": 0.05}, ["a", "b", "c"])
    path = write_file(detector, tmp_path / "m.onnx", torch.randint(0, 255, (3, 48, 64), dtype=torch.uint8))
    stages: dict[str, set[str]] = {}

    def walk(graph):
        for node in graph.node:
            stages.setdefault(node.op_type, set()).add(exported_profile.stage_of(node.name))
            for attribute in node.attribute:
                if attribute.HasField("g"):
                    walk(attribute.g)

    walk(onnx.load(str(path)).graph)
    assert stages["Resize"] == {"transform", "FPN"}          # the picture's resize, the top-down upsampling
    assert stages["RoiAlign"] == {"RoI align"}
    assert stages["NonMaxSuppression"] == {"proposal decode + NMS", "detection post-processing"}
    assert stages["TopK"] <= {"proposal decode + NMS", "detection post-processing"}
    assert stages["Gemm"] == {"box head", "box predictor"}
    assert stages["Conv"] == {"backbone body", "FPN", "RPN head"}
    assert stages["Sigmoid"] == {"proposal decode + NMS"}


@pytest.mark.slow     # exports, quantizes and profiles four files: ~30 s of CPU on the 2-core EPYC
def test_each_runtimes_stages_add_up_to_its_own_node_times(tmp_path, monkeypatch, capsys):
    from rcnn_cli.commands.benchmark import BenchmarkOptions, run
    from rcnn_cli.inference.exported import OpenVinoDetector

    # What the runtimes' profilers reported, read here on their own: the trace's node events, the layers'
    # real times (one image, one run, no warmup).
    traces, layer_seconds = [], []
    trace_times = exported_profile.onnx_trace_times
    monkeypatch.setattr(exported_profile, "onnx_trace_times",
                        lambda trace, warmup_runs: traces.append(trace) or trace_times(trace, warmup_runs))
    last_profile = OpenVinoDetector.last_profile

    def noted(runner):
        layers, latency = last_profile(runner)
        layer_seconds.append(sum(layer.real_time.total_seconds() for layer in layers))
        return layers, latency

    monkeypatch.setattr(OpenVinoDetector, "last_profile", noted)
    options = BenchmarkOptions([*TINY_TRAIN], count=1, repeats=1, warmup=0, train=False, profile=True,
                               formats="onnx,openvino", json_path=tmp_path / "profile.json")
    result = run(options)       # RCNN_HARDWARE=avx2 (conftest): OpenVINO's bf16 hint is not native, so skipped
    profiles = result["exported"]
    assert json.loads(Path(tmp_path / "profile.json").read_text())["exported"] == profiles
    assert list(profiles) == ["onnx_fp32", "onnx_int8", "openvino_f32", "openvino_bf16", "openvino_int8",
                              "openvino_int8_bf16"]
    assert "skipped" in profiles["openvino_bf16"] and "skipped" in profiles["openvino_int8_bf16"]
    # every node once: the If of the RPN's NMS spans its body's nodes, which the trace lists themselves
    onnx_ms = [sum(e["dur"] for e in trace if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")
                   and e["args"]["op_name"] != "If") / 1e3 for trace in traces]
    assert all(any(e.get("args", {}).get("op_name") == "If" for e in trace) for trace in traces)
    openvino_ms = [seconds * 1e3 for seconds in layer_seconds]        # f32's run, int8's
    for name, runtime_ms in zip(("onnx_fp32", "onnx_int8", "openvino_f32", "openvino_int8"), onnx_ms + openvino_ms):
        rows = {row["stage"]: row for row in profiles[name]["rows"]}
        assert tuple(rows) == INFERENCE_ROWS, name
        assert sum(row["ms"] for row in rows.values()) == pytest.approx(runtime_ms, rel=1e-6), name
        assert sum(row["share"] for row in rows.values()) == pytest.approx(1.0), name
        for stage in ("backbone body", "FPN", "RPN head", "RoI align", "box head"):
            assert rows[stage]["ms"] > 0, (name, stage)
        assert rows[ROOT_STAGE]["share"] < 0.25, (name, profiles[name]["unplaced_nodes"])
    printed = capsys.readouterr().out
    assert "exported, ONNX fp32 (onnxruntime" in printed and "exported, OpenVINO int8 (openvino int8" in printed


def test_the_profile_reads_only_runtimes_with_a_profiler():
    from rcnn_cli.commands.benchmark import BenchmarkOptions, run
    from rcnn_cli.errors import UsageError

    with pytest.raises(UsageError, match="--profile --formats torchscript: .* use --formats onnx,openvino"):
        run(BenchmarkOptions([*TINY_TRAIN], profile=True, formats="onnx,torchscript"))
