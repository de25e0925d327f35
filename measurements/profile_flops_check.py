"""The stage profile's FLOP counts against torchvision's published ones (docs/speed.md, "Where the time goes"):
resnet50_fpn Faster R-CNN on one 800x800 input, the RoI stages scaled to 1,000 proposals (torchvision's
134.38 GFLOPS for fasterrcnn_resnet50_fpn are multiply-adds; FlopCounterMode counts 2 per multiply-add).
Run: .venv/bin/python measurements/profile_flops_check.py"""

import torch
import torchvision
from omegaconf import OmegaConf

from rcnn_cli.benchmark.profile import count_inference_flops
from rcnn_cli.benchmark.run import build_models
from rcnn_cli.settings.resolve import resolve

ROI_STAGES = ("box head", "box predictor")


def main() -> None:
    cfg = resolve("benchmark", ["model=resnet50_fpn"]).cfg
    model = build_models(OmegaConf.to_container(cfg.model, resolve=True), device="cpu")["ours"]
    regions = []
    model.roi_heads.box_head.register_forward_hook(lambda _m, args, _out: regions.append(args[0].shape[0]))
    torch.manual_seed(0)
    flops = count_inference_flops(model, [torch.rand(3, 800, 800)])
    per_region = {stage: flops.get(stage, 0) / regions[0] for stage in ROI_STAGES}
    at_1000 = {**flops, **{stage: per_region[stage] * 1000 for stage in ROI_STAGES}}
    published = torchvision.models.detection.FasterRCNN_ResNet50_FPN_Weights.COCO_V1.meta["_ops"]
    print({stage: round(count / 1e9, 2) for stage, count in at_1000.items() if count})
    print(f"total at 1,000 proposals: {sum(at_1000.values()) / 1e9:.2f} GFLOP; torchvision publishes "
          f"{published} G multiply-adds = {2 * published:.2f} GFLOP")


if __name__ == "__main__":
    main()
