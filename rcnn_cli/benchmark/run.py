"""Side-by-side timing of our detector, its inference fast paths (folded BatchNorm; bf16; int8), and
torchvision's detector with the same weights, on the same images, in the same process."""

from __future__ import annotations

import copy
import statistics
from typing import Any

import torch
import torchvision
from torch import nn
from torchvision.models.detection import FasterRCNN as TorchvisionFasterRCNN
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.ops import FrozenBatchNorm2d

from ..eval.agreement import agreement_map50
from ..hardware import bf16_speedup, training_autocast_dtype
from ..inference.fast import optimize_for_inference, to_bfloat16, use_channels_last
from ..inference.precision import native_reduced_path
from ..inference.quantize import ENGINE, quantize_int8
from ..model.factory import create_detector
from ..timing import peak_rss_mb, spread, timed
from .machine import machine_info

TORCHVISION_BUILDERS = {
    "resnet50_fpn": torchvision.models.detection.fasterrcnn_resnet50_fpn,
    "resnet50_fpn_v2": torchvision.models.detection.fasterrcnn_resnet50_fpn_v2,
    "mobilenet_v3_large_fpn": torchvision.models.detection.fasterrcnn_mobilenet_v3_large_fpn,
}
# Our config keys that torchvision's FasterRCNN takes under the same name.
SHARED_KEYS = ("min_size", "max_size", "image_mean", "image_std", "rpn_pre_nms_top_n_train", "rpn_pre_nms_top_n_test",
               "rpn_post_nms_top_n_train", "rpn_post_nms_top_n_test", "rpn_nms_thresh", "rpn_fg_iou_thresh",
               "rpn_bg_iou_thresh", "rpn_batch_size_per_image", "rpn_positive_fraction", "rpn_score_thresh",
               "box_score_thresh", "box_nms_thresh", "box_detections_per_img", "box_fg_iou_thresh",
               "box_bg_iou_thresh", "box_batch_size_per_image", "box_positive_fraction", "bbox_reg_weights")


def torchvision_twin(cfg: dict[str, Any], num_classes: int, state: dict[str, torch.Tensor]) -> nn.Module:
    """torchvision's detector for the same config, loaded with our weights."""
    kwargs = {key: (list(cfg[key]) if isinstance(cfg[key], (list, tuple)) else cfg[key])
              for key in SHARED_KEYS if key in cfg}
    kwargs["bbox_reg_weights"] = tuple(kwargs["bbox_reg_weights"])
    name = cfg["backbone"]
    if name in TORCHVISION_BUILDERS:
        model = TORCHVISION_BUILDERS[name](weights=None, weights_backbone=None, num_classes=num_classes, **kwargs)
    elif name == "resnet18_fpn":
        backbone = resnet_fpn_backbone(backbone_name="resnet18", weights=None, norm_layer=FrozenBatchNorm2d,
                                       trainable_layers=cfg["trainable_backbone_layers"])
        model = TorchvisionFasterRCNN(backbone, num_classes=num_classes, **kwargs)
    else:
        raise ValueError(f"no torchvision twin for {name}; benchmark one of resnet18_fpn, "
                         + ", ".join(TORCHVISION_BUILDERS))
    freeze_batchnorm(model.backbone)   # as ours: frozen statistics, so training compares like with like
    target = model.state_dict()
    model.load_state_dict({k: v for k, v in state.items() if k in target}, strict=True)
    return model


def freeze_batchnorm(module: nn.Module) -> None:
    """Every nn.BatchNorm2d -> FrozenBatchNorm2d, in place (torchvision's builders use trainable
    BatchNorm when given no pretrained weights)."""
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.BatchNorm2d):
                setattr(parent, name, FrozenBatchNorm2d(child.num_features, eps=child.eps))


def twin_problem(cfg: dict[str, Any]) -> str | None:
    """Why torchvision has no detector equal to ``cfg`` (None when it has one)."""
    if cfg["backbone"] == "resnet18_fpn" and cfg["fpn_channels"] != 256:
        return f"torchvision's resnet18 FPN has 256 channels, this model {cfg['fpn_channels']}"
    if cfg["backbone"] not in (*TORCHVISION_BUILDERS, "resnet18_fpn"):
        return f"torchvision has no Faster R-CNN with a {cfg['backbone']} backbone"
    return None


def auto_column(result: dict, images: int) -> str:
    """What model.precision=auto runs here, by the one rule (inference/precision.py) applied to this
    benchmark's own figures: the bf16 column where it agrees with fp32 and is faster than folded."""
    from ..inference.precision import Trial, verdict

    if "ours_bf16" not in result["inference"]:
        return "ours_fast"
    speed = result["inference"]
    speedup = speed["ours_fast"]["latency_batch1"]["median_s"] / speed["ours_bf16"]["latency_batch1"]["median_s"]
    agreement = result["agreement_map50"].get("bf16_vs_fp32")
    takes, reason = verdict(Trial(speedup, agreement, 1 if agreement is not None else 0, images, "timed images"))
    result["auto_reason"] = reason
    return "ours_bf16" if takes else "ours_fast"


def auto_with_compiled(result: dict, torch_auto: str) -> str:
    """What ``rcnn predict`` and ``serve`` run under auto where they may choose a compiled OpenVINO model:
    export/compiled.py's rule (``choose``) applied to this benchmark's own rows, the torch choice
    ``torch_auto`` against the OpenVINO paths that rule would compile here. -> a key of
    result["inference"] or of result["exported"]."""
    from ..export.compiled import Measured, choose, openvino_paths_here
    from .exported import row_key

    rows = result.get("exported", {})
    paths = [path for path in openvino_paths_here() if "skipped" not in rows.get(row_key(path), {"skipped": ""})]
    if not paths:
        return torch_auto
    measured = [Measured(f"torch {torch_auto}", _seconds(result["inference"][torch_auto]))]
    for path in paths:
        row = rows[row_key(path)]
        agreement = row["agreement_map50"]
        measured.append(Measured(path, _seconds(row), agreement, int(agreement is not None)))
    decision = choose(measured, _seconds(result["inference"]["ours"]), result["images"], "timed images")
    result["auto_reason"] = f"{result.get('auto_reason', torch_auto)}; {decision.reason}"
    return row_key(decision.runs) if decision.runs in paths else torch_auto


def goal_ratios(result: dict) -> dict[str, Any]:
    """Issue 28's goal figures, each against the baseline (torchvision fp32 eager where it has a twin):
    the default path (what auto runs, ``result["auto"]``) and the fastest path, torch or exported,
    that agrees with exact fp32 at mAP50 >= MIN_AGREEMENT_MAP50 (exact fp32 itself agrees); with the
    agreement each was measured at (random weights agree only by chance: see ``weights``)."""
    from ..inference.precision import MIN_AGREEMENT_MAP50

    base = _seconds(result["inference"][result["baseline"]])
    labels = {"ours_fast": "fast_vs_fp32", "ours_bf16": "bf16_vs_fp32", "ours_int8": "int8_vs_fp32"}
    paths = {"ours": (_seconds(result["inference"]["ours"]), 1.0)}
    paths |= {name: (_seconds(figures), result["agreement_map50"].get(labels[name]))
              for name, figures in result["inference"].items() if name in labels}
    paths |= {name: (_seconds(row), row["agreement_map50"])
              for name, row in result.get("exported", {}).items() if "skipped" not in row}
    agreeing = {name: seconds for name, (seconds, agreement) in paths.items()
                if agreement is not None and agreement >= MIN_AGREEMENT_MAP50}
    best = min(agreeing, key=agreeing.get)
    goals = {"baseline": result["baseline"], "default_path": result["auto"],
             "default_speedup": base / paths[result["auto"]][0], "default_agreement": paths[result["auto"]][1],
             "best_agreeing_path": best, "best_agreeing_speedup": base / agreeing[best],
             "best_agreeing_agreement": paths[best][1]}
    if "train_step_auto" in result["speedup"]:
        goals["train_step_speedup"] = result["speedup"]["train_step_auto"]
    return goals


def _seconds(figures: dict) -> float:
    return figures["latency_batch1"]["median_s"]


def build_models(cfg: dict[str, Any], num_classes: int = 91, seed: int = 0,
                 device: torch.device | str = "cpu", checkpoint: tuple[dict, dict] | None = None
                 ) -> dict[str, nn.Module]:
    """{"torchvision" (where it has the same detector), "ours", "ours_fast", and "ours_bf16" where
    bf16 is native} with identical weights: seeded random, or ``cfg["weights"]`` (then the class
    count comes from the file). checkpoint: that file as ``settings.resolve`` read it (read once)."""
    torch.manual_seed(seed)
    cfg = {**cfg, "norm": "frozen_bn", "num_classes": cfg["num_classes"] or (None if cfg["weights"] else num_classes)}
    loaded = create_detector(cfg, checkpoint=checkpoint)
    ours, cfg = loaded.model.eval(), loaded.config     # resolved: class count, trainable layers
    models = {"ours": ours}
    if twin_problem(cfg) is None:
        classes = ours.roi_heads.box_predictor.cls_score.out_features
        theirs = torchvision_twin(cfg, classes, ours.state_dict()).eval()
        # The same layers train in both, or the training step compares different amounts of work.
        trains = {name: p.requires_grad for name, p in ours.named_parameters()}
        for name, p in theirs.named_parameters():
            p.requires_grad_(trains[name])
        models = {"torchvision": theirs, **models}
    models["ours_fast"] = optimize_for_inference(copy.deepcopy(ours))
    if native_reduced_path(torch.device(device).type):   # the only bf16 auto could choose
        models["ours_bf16"] = to_bfloat16(optimize_for_inference(copy.deepcopy(ours)))
    return models


def device_type(model: nn.Module) -> str:
    return next(model.parameters()).device.type




def as_float(images: list[torch.Tensor]) -> list[torch.Tensor]:
    return [image.float() / 255 for image in images]   # torchvision's transform takes floats only


def inference_figures(models: dict[str, nn.Module], images: list[torch.Tensor], batch: int, repeats: int,
                      warmup: int) -> dict[str, dict]:
    floats = as_float(images)
    group = floats[:batch]
    figures: dict[str, dict] = {}
    for name, model in models.items():
        with torch.inference_mode():
            latency = timed(lambda m=model: [m([image]) for image in floats], repeats, warmup)
            per_image = [t / len(floats) for t in latency]
            throughput = timed(lambda m=model: m(group), repeats, warmup)
        figures[name] = {"latency_batch1": spread(per_image),
                         "throughput_images_per_s": len(group) / statistics.median(throughput),
                         "batch": len(group), "peak_rss_mb": peak_rss_mb()}
    return figures


def training_figures(models: dict[str, nn.Module], images: list[torch.Tensor], targets: list[dict],
                     repeats: int, warmup: int) -> dict[str, dict]:
    """Plain fp32 training steps of torchvision's model and ours, and ours as ``rcnn train`` runs
    it by default (trainer.precision=auto: channels_last, mixed precision where it pays)."""
    floats = as_float(images)
    device = device_type(models["ours"])
    autocast = training_autocast_dtype(device)
    figures = {}
    for name in ("torchvision", "ours", "ours_auto"):
        model = copy.deepcopy(models[name.removesuffix("_auto")]).train()
        if name == "ours_auto":
            use_channels_last(model)
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-5, momentum=0.9)
        dtype = autocast if name == "ours_auto" else None

        def step(m=model, o=optimizer, dtype=dtype):
            with torch.autocast(device, dtype=dtype or torch.float32, enabled=dtype is not None):
                loss = sum(m(floats, targets).values())
            o.zero_grad()
            loss.backward()
            o.step()

        times = timed(step, repeats, warmup)
        figures[name] = {"train_step": spread(times), "train_images_per_s": len(floats) / statistics.median(times),
                         "batch": len(floats), "peak_rss_mb": peak_rss_mb(),
                         "precision": str(dtype).removeprefix("torch.") if dtype else "float32"}
    return figures


SCALING_SIZES = (320, 512, 800, 1024)
SCALING_PROPOSALS = (300, 1000, 2000)


def scaling_figures(model: nn.Module, images: list[torch.Tensor], repeats: int, warmup: int) -> list[dict]:
    """Batch-1 latency of ``model`` (changed in place, then restored) per input size (the short
    side; the long-side cap keeps torchvision's 800:1333 ratio) and post-NMS proposal count."""
    floats = as_float(images)
    transform, rpn = model.transform, model.rpn
    saved = (transform.min_size, transform.max_size, dict(rpn.post_nms_top_n))
    rows = []
    try:
        for size in SCALING_SIZES:
            transform.min_size, transform.max_size = (size,), round(size * 1333 / 800)
            for proposals in SCALING_PROPOSALS:
                rpn.post_nms_top_n["test"] = proposals
                with torch.inference_mode():
                    times = timed(lambda: [model([image]) for image in floats], repeats, warmup)
                rows.append({"min_size": size, "proposals": proposals,
                             "latency_batch1": spread([t / len(floats) for t in times])})
    finally:
        transform.min_size, transform.max_size, rpn.post_nms_top_n = saved
    return rows


def state_dict_bytes(model: nn.Module) -> int:
    """Size of the model's weights saved by torch (what a .pth of it holds), for the file-size column."""
    import io

    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell()


def int8_available() -> bool:
    return ENGINE in torch.backends.quantized.supported_engines and not torch.cuda.is_available()


def benchmark(cfg: dict[str, Any], images: list[torch.Tensor], targets: list[dict], batch: int = 4,
              repeats: int = 3, warmup: int = 1, train: bool = True,
              calibration: list[torch.Tensor] | None = None, scaling: bool = False,
              formats: list[str] = (), device: torch.device | str = "cpu",
              checkpoint: tuple[dict, dict] | None = None) -> dict[str, Any]:
    """calibration: images for the int8 columns' activation ranges (default: the timed images);
    formats: exported files to time beside the torch columns (benchmark/exported.py); device: where
    the torch columns run (``device``; int8 and the exported runtimes run on the CPU)."""
    device = torch.device(device)
    calibration = calibration or images
    models = {name: model.to(device) for name, model in build_models(cfg, device=device, checkpoint=checkpoint).items()}
    if int8_available() and device.type == "cpu":
        models["ours_int8"] = quantize_int8(copy.deepcopy(models["ours"]), calibration)
    cpu_images, images = images, [image.to(device) for image in images]
    targets = [{k: v.to(device) for k, v in target.items()} for target in targets]
    result: dict[str, Any] = {"machine": machine_info(), "model": cfg["name"],
                              "weights": cfg["weights"] or "seeded random", "min_size": cfg["min_size"],
                              "max_size": cfg["max_size"], "images": len(images), "device": str(device)}
    result["inference"] = inference_figures(models, images, batch, repeats, warmup)
    with torch.inference_mode():
        outputs = {name: [{k: v.cpu() for k, v in model([image])[0].items()} for image in as_float(images)]
                   for name, model in models.items()}
    num_classes = models["ours"].roi_heads.box_predictor.cls_score.out_features - 1
    exact = outputs["ours"]
    result["agreement_map50"] = {}
    if "torchvision" in outputs:
        result["agreement_map50"]["ours_vs_torchvision"] = agreement_map50(outputs["torchvision"], exact, num_classes)
    for name, label in (("ours_fast", "fast_vs_fp32"), ("ours_bf16", "bf16_vs_fp32"), ("ours_int8", "int8_vs_fp32")):
        if name in outputs:
            result["agreement_map50"][label] = agreement_map50(exact, outputs[name], num_classes)
    if "ours_int8" in models or formats:
        result["int8_calibration_images"] = len(calibration)
    if formats:
        from .exported import exported_figures

        result["exported"] = exported_figures(models["ours"], cfg, cpu_images, calibration, exact, list(formats),
                                              repeats, warmup)
        result["torch_weights_bytes"] = state_dict_bytes(models["ours"])
    # Speed-ups are against torchvision, or against our own exact fp32 where it has no twin.
    result["baseline"] = "torchvision" if "torchvision" in models else "ours"
    result["no_torchvision_twin"] = twin_problem(cfg)
    base = result["inference"][result["baseline"]]["latency_batch1"]["median_s"]
    result["speedup"] = {
        name: base / figures["latency_batch1"]["median_s"] for name, figures in result["inference"].items()}
    result["bf16_probe_speedup"] = bf16_speedup(device_type(models["ours"]))
    auto = auto_column(result, len(images))
    result["auto"] = auto_with_compiled(result, auto)
    if scaling:
        result["scaling"] = scaling_figures(models[auto], images, repeats, warmup)
    if train and targets and "torchvision" in models:
        result["training"] = training_figures(models, images[:batch], targets[:batch], repeats, warmup)
        t = result["training"]
        result["speedup"]["train_step"] = (t["torchvision"]["train_step"]["median_s"]
                                           / t["ours"]["train_step"]["median_s"])
        result["speedup"]["train_step_auto"] = (t["torchvision"]["train_step"]["median_s"]
                                                / t["ours_auto"]["train_step"]["median_s"])
    result["goals"] = goal_ratios(result)
    return result
