"""What the RPN head's backward costs in a training step on the CPU (docs/speed.md, "Training that uses the CPU").

The head (3x3 conv 256->256 + ReLU, then 1x1 convs to 3 logits and 12 deltas) runs over the five FPN levels of an
800x1088 batch of 2 (200x272 down to 13x17). The contenders take turns in one process, so all see the same load on a
shared machine; each time is the median of ROUNDS.

1. The whole head, forward and backward, per variant: fp32 or bf16 autocast (as ``rcnn train`` runs it), NCHW or
   channels_last features, oneDNN (mkldnn) or torch's native convolution, the head's weights NCHW or channels_last,
   the levels run separately or packed into one zero-separated canvas (exact for a 3x3 conv with padding 1: every
   level's border still sees zeros, see ``canvas_head``), and the two sibling 1x1 convs run one after the other (as
   before, and still in inference) or as one conv (what ``RPNHead`` now does in training).
2. The 3x3 conv's backward split into its two halves (``aten.convolution_backward`` with one output mask at a
   time) per level: the gradient of the input and of the weight, beside the forward. Twice the forward's FLOPs in
   all, each half as many as the forward.

Run: .venv/bin/python measurements/rpn_head_backward.py [--rounds N] [--threads N]"""

import argparse
import copy
import re
import statistics
import time

import torch
import torch.nn.functional as F

from rcnn_cli.model.rpn_head import RPNHead, _to_anchor_major

LEVELS = [(200, 272), (100, 136), (50, 68), (25, 34), (13, 17)]    # an 800x1088 batch's P2-P6 (pool)
BATCH, CHANNELS, ANCHORS = 2, 256, 3


def features(channels_last: bool, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    maps = [torch.randn(BATCH, CHANNELS, h, w, generator=generator) for h, w in LEVELS]
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return [m.contiguous(memory_format=fmt).requires_grad_() for m in maps]


def canvas_layout() -> tuple[tuple[int, int], list[tuple[int, int]]]:
    """P2 on the left; the others stacked in a column to its right, one zero row/column between neighbours."""
    (h0, w0) = LEVELS[0]
    origins, top, left = [(0, 0)], 0, w0 + 1
    for h, _ in LEVELS[1:]:
        origins.append((top, left))
        top += h + 1
    width = left + max(w for _, w in LEVELS[1:])
    return (max(h0, top - 1), width), origins


def canvas_head(head: RPNHead, maps: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The head's 3x3 conv run once on a canvas holding every level: same outputs as per level (a level's
    border sees the canvas's zero gaps or the conv's padding, never another level), at the canvas's extra area."""
    (height, width), origins = canvas_layout()
    canvas = maps[0].new_zeros(BATCH, CHANNELS, height, width)
    if maps[0].is_contiguous(memory_format=torch.channels_last):
        canvas = canvas.contiguous(memory_format=torch.channels_last)
    for m, (top, left) in zip(maps, origins):
        canvas[..., top:top + m.shape[-2], left:left + m.shape[-1]] = m
    hidden = head.conv(canvas)
    logits, deltas = [], []
    for m, (top, left) in zip(maps, origins):
        h, w = m.shape[-2:]
        crop = hidden[..., top:top + h, left:left + w]
        logits.append(_to_anchor_major(head.cls_logits(crop), head.logits_per_anchor))
        deltas.append(_to_anchor_major(head.bbox_pred(crop), 4))
    return torch.cat(logits, 1), torch.cat(deltas, 1)


def step(head: RPNHead, maps: list[torch.Tensor], run, autocast: bool, grads) -> tuple[float, float]:
    """Forward then backward of ``run(head, maps)``; (forward s, backward s)."""
    head.zero_grad(set_to_none=True)
    for m in maps:
        m.grad = None
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        logits, deltas = run(head, maps)
    middle = time.perf_counter()
    torch.autograd.backward([logits, deltas], grads)
    return middle - start, time.perf_counter() - middle


def per_level(head: RPNHead, maps: list[torch.Tensor]):
    """The head as it ran before: per level the 3x3 conv, then each sibling 1x1 conv on its own (the inference
    path of ``RPNHead.forward`` still runs this way)."""
    logits, deltas = [], []
    for m in maps:
        hidden = head.conv(m)
        logits.append(_to_anchor_major(head.cls_logits(hidden), head.logits_per_anchor))
        deltas.append(_to_anchor_major(head.bbox_pred(hidden), 4))
    return torch.cat(logits, 1), torch.cat(deltas, 1)


def fused_sibling_head(head: RPNHead, maps: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per level, the two sibling 1x1 convs run as one (3 + 12 output channels, weights concatenated): the
    training path of ``RPNHead.forward`` (``_siblings_as_one``)."""
    assert head.training
    return head(maps)


def whole_head_part(rounds: int, only: str) -> None:
    torch.manual_seed(0)
    head = RPNHead(CHANNELS, ANCHORS)
    head_channels_last = copy.deepcopy(head).to(memory_format=torch.channels_last)
    total = sum(h * w for h, w in LEVELS) * ANCHORS
    grads = [torch.randn(BATCH, total, 1), torch.randn(BATCH, total, 4)]
    (height, width), _ = canvas_layout()
    print(f"canvas {height}x{width}: {height * width / sum(h * w for h, w in LEVELS):.3f}x the levels' area")
    nchw, channels_last = features(False), features(True)
    # Under autocast the FPN hands the head bf16 maps (it runs in bf16 too).
    bf16_channels_last = [m.detach().bfloat16().requires_grad_() for m in channels_last]
    variants = {   # name: (head, maps, run, autocast, mkldnn)
        "fp32 NCHW, per level (ours fp32)": (head, nchw, per_level, False, True),
        "fp32 NCHW, fused sibling 1x1": (head, nchw, fused_sibling_head, False, True),
        "fp32 NCHW, per level, native conv": (head, nchw, per_level, False, False),
        "fp32 channels_last, per level": (head, channels_last, per_level, False, True),
        "bf16 channels_last, per level (rcnn train)": (head, bf16_channels_last, per_level, True, True),
        "bf16 channels_last, head weights channels_last": (head_channels_last, bf16_channels_last, per_level,
                                                           True, True),
        "bf16 channels_last, fused sibling 1x1": (head, bf16_channels_last, fused_sibling_head, True, True),
        "bf16 channels_last, head weights channels_last + fused 1x1": (
            head_channels_last, bf16_channels_last, fused_sibling_head, True, True),
        "fp32 channels_last, head weights channels_last": (head_channels_last, channels_last, per_level, False, True),
        "bf16 channels_last, one canvas": (head, bf16_channels_last, canvas_head, True, True),
    }
    variants = {name: v for name, v in variants.items() if re.search(only, name)}
    times = {name: ([], []) for name in variants}
    for round_ in range(rounds + 1):    # round 0 warms up (oneDNN builds its kernels on first use)
        for name, (model, maps, run, autocast, mkldnn) in variants.items():
            with torch.backends.mkldnn.flags(enabled=mkldnn):
                forward, backward = step(model, maps, run, autocast, grads)
            if round_:
                times[name][0].append(forward)
                times[name][1].append(backward)
    print(f"whole head, forward + backward, ms (median of {rounds}):")
    for name, (forward, backward) in times.items():
        f, b = statistics.median(forward) * 1e3, statistics.median(backward) * 1e3
        print(f"  {name:60s} forward {f:7.0f}  backward {b:7.0f}  ratio {b / f:4.2f}  sum {f + b:7.0f}")


def conv_backward(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, mask: list[bool]):
    return torch.ops.aten.convolution_backward(grad, x, weight, [CHANNELS], [1, 1], [1, 1], [1, 1], False, [0, 0], 1,
                                               mask)


def conv_halves_part(rounds: int) -> None:
    """Per level and precision: forward, grad-input-only and grad-weight-only of the 3x3 conv (channels_last)."""
    weight = torch.randn(CHANNELS, CHANNELS, 3, 3) * 0.01
    print(f"3x3 conv halves, channels_last, ms (median of {rounds}):")
    for dtype in (torch.float32, torch.bfloat16):
        w = weight.to(dtype)
        for level, (h, w_) in enumerate(LEVELS):
            x = torch.randn(BATCH, CHANNELS, h, w_).to(dtype).contiguous(memory_format=torch.channels_last)
            grad = torch.randn(BATCH, CHANNELS, h, w_).to(dtype).contiguous(memory_format=torch.channels_last)
            ops = {
                "forward": lambda x=x, w=w: F.conv2d(x, w, None, 1, 1),
                "grad input": lambda x=x, w=w, grad=grad: conv_backward(grad, x, w, [True, False, False]),
                "grad weight": lambda x=x, w=w, grad=grad: conv_backward(grad, x, w, [False, True, True]),
                "grad weight, NCHW grad": lambda x=x, w=w, grad=grad: conv_backward(
                    grad.contiguous(), x, w, [False, True, True]),
            }
            times = {name: [] for name in ops}
            for round_ in range(rounds + 1):
                for name, op in ops.items():
                    start = time.perf_counter()
                    op()
                    if round_:
                        times[name].append(time.perf_counter() - start)
            gflop = 2 * BATCH * CHANNELS * CHANNELS * 9 * h * w_ / 1e9
            cells = "  ".join(f"{name} {statistics.median(t) * 1e3:6.1f}" for name, t in times.items())
            print(f"  {str(dtype)[6:]:8s} P{level + 2} {h}x{w_} ({gflop:.1f} GFLOP each): {cells}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", default="", help="a regular expression: the whole-head variants to run")
    parser.add_argument("--part", choices=("head", "halves", "all"), default="all")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if args.part in ("head", "all"):
        whole_head_part(args.rounds, args.only)
    if args.part in ("halves", "all"):
        conv_halves_part(args.rounds)


if __name__ == "__main__":
    main()
