"""A training step before and after the RPN head's sibling 1x1 convs ran as one conv, in turns in one process
(docs/speed.md, "Training that uses the CPU"). "before" patches ``RPNHead._siblings_as_one`` back to the
per-module loop the head ran until then (its inference path); everything else is the same step as
``rcnn benchmark`` times it as ``rcnn train`` runs it (channels_last, bf16 autocast where it pays), plus
plain fp32. Also checks that both give the same losses and gradients from the same weights and RNG.

Run: .venv/bin/python measurements/training_step_turns.py [overrides...] [--count 2] [--rounds 3]
e.g. model=resnet18_fpn dataset=bccd model.min_size=512"""

import argparse
import copy
import statistics
import time

import torch
from omegaconf import OmegaConf

from rcnn_cli.benchmark.run import as_float, build_models
from rcnn_cli.commands.benchmark import load_images
from rcnn_cli.hardware import training_autocast_dtype
from rcnn_cli.inference.fast import use_channels_last
from rcnn_cli.model.rpn_head import RPNHead
from rcnn_cli.settings.resolve import resolve

FUSED = RPNHead._siblings_as_one


per_module = RPNHead._per_module      # "before": the two sibling convs as separate modules


def step(model, images, targets, autocast, head_path, seed=0):
    """Forward + backward; (seconds, losses, gradients). The RNG is seeded so sampling draws the same."""
    RPNHead._siblings_as_one = head_path
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=autocast or torch.float32, enabled=autocast is not None):
        losses = model(images, targets)
        loss = sum(losses.values())
    loss.backward()
    seconds = time.perf_counter() - start
    RPNHead._siblings_as_one = FUSED
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return seconds, {k: v.item() for k, v in losses.items()}, grads


def loss_curves(paths: dict, images, targets, steps: int, lr: float) -> None:
    """The summed loss of ``steps`` SGD steps (momentum 0.9) on the same batch from the same weights,
    before and after, per path: a short loss curve."""
    for name, (model, dtype) in paths.items():
        curves = {}
        for label, head_path in (("before", per_module), ("after", FUSED)):
            trained = copy.deepcopy(model)
            optimizer = torch.optim.SGD([p for p in trained.parameters() if p.requires_grad], lr=lr, momentum=0.9)
            curve = []
            for index in range(steps):
                _, losses, _ = step(trained, images, targets, dtype, head_path, seed=index)
                curve.append(round(sum(losses.values()), 5))
                optimizer.step()
            curves[label] = curve
        print(f"{name}: loss per step, before {curves['before']}\n{' ' * len(name)}  after  {curves['after']}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--count", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--curve", type=int, default=0, help="instead: N SGD steps per path from the same weights, "
                        "the loss of each step before and after")
    parser.add_argument("--lr", type=float, default=0.01, help="the SGD learning rate of --curve")
    parser.add_argument("--paths", choices=("both", "fp32", "train"), default="both")
    args = parser.parse_args()
    settings = resolve("benchmark", args.overrides)
    cfg = settings.cfg
    images, targets = load_images(cfg, None, args.count)
    images = as_float(images)
    ours = build_models(OmegaConf.to_container(cfg.model, resolve=True))["ours"]
    autocast = training_autocast_dtype("cpu")
    paths = {"fp32": (copy.deepcopy(ours).train(), None),
             f"as rcnn train ({autocast})": (use_channels_last(copy.deepcopy(ours)).train(), autocast)}
    if args.paths != "both":
        paths = dict([list(paths.items())[args.paths == "train"]])
    print(f"{len(images)} images, batch {len(images)}, {torch.get_num_threads()} threads, overrides {args.overrides}")
    if args.curve:
        return loss_curves(paths, images, targets, args.curve, args.lr)
    for name, (model, dtype) in paths.items():
        _, losses_before, grads_before = step(model, images, targets, dtype, per_module)    # also the warm-up
        _, losses_after, grads_after = step(model, images, targets, dtype, FUSED)
        worst = max((grads_before[n] - g).abs().max().item() / max(grads_before[n].abs().max().item(), 1e-12)
                    for n, g in grads_after.items())
        print(f"{name}: losses before {losses_before}\n{' ' * len(name)}  losses after  {losses_after}\n"
              f"{' ' * len(name)}  {len(grads_after)} gradients, largest difference {worst:.2e} of the tensor's max")
        times = {"before": [], "after": []}
        for round_ in range(args.rounds):
            order = (("before", per_module), ("after", FUSED))
            for label, path in order[::-1] if round_ % 2 else order:    # ABBA: no seat is always second
                times[label].append(step(model, images, targets, dtype, path)[0])
        before, after = statistics.median(times["before"]), statistics.median(times["after"])
        print(f"{name}: step before {before:.2f} s, after {after:.2f} s ({before / after:.3f}x), "
              f"median of {args.rounds} in turns (ABBA order); all: {times}")


if __name__ == "__main__":
    main()
