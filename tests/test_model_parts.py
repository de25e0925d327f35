"""Each detector part against small hand-worked cases (and torchvision where it has the same op)."""

from __future__ import annotations

import math

import pytest
import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import MultiScaleRoIAlign

from rcnn_cli.model.anchors import AnchorGenerator
from rcnn_cli.model.box_coder import BoxCoder
from rcnn_cli.model.matcher import BACKGROUND, IGNORE, Matcher
from rcnn_cli.model.roi_pool import MultiScaleRoIPool
from rcnn_cli.model.rpn import RegionProposalNetwork
from rcnn_cli.model.rpn_head import RPNHead
from rcnn_cli.model.sampler import BalancedSampler
from rcnn_cli.ops.boxes import pairwise_iou


def test_cell_anchors_are_the_papers_k_boxes():
    gen = AnchorGenerator(((32,),), ((0.5, 1.0, 2.0),))
    # ratio = h / w at area 32^2: 0.5 -> 45.25 x 22.63, 1 -> 32 x 32, 2 -> 22.63 x 45.25; rounded.
    assert gen.cell_anchors[0].tolist() == [[-23, -11, 23, 11], [-16, -16, 16, 16], [-11, -23, 11, 23]]
    assert gen.num_anchors_per_location() == [3]


def test_anchor_count_and_centres():
    gen = AnchorGenerator(((32,),), ((0.5, 1.0, 2.0),))
    anchors = gen([(2, 3)], (8, 12), torch.device("cpu"))
    assert anchors.shape == (2 * 3 * 3, 4)  # H * W * k
    centres = ((anchors[:, :2] + anchors[:, 2:]) / 2)[::3]
    assert centres.tolist() == [[0, 0], [4, 0], [8, 0], [0, 4], [4, 4], [8, 4]]  # stride 4, cell-major
    assert anchors[3].tolist() == [-19, -11, 27, 11]  # second cell, first ratio


def test_anchors_equal_torchvision_on_fpn_levels():
    sizes, ratios = ((32,), (64,), (128,)), ((0.5, 1.0, 2.0),) * 3
    shapes = [(20, 30), (10, 15), (5, 8)]
    ours = AnchorGenerator(sizes, ratios)(shapes, (80, 120), torch.device("cpu"))
    features = [torch.zeros(1, 1, h, w) for h, w in shapes]
    theirs = TVAnchorGenerator(sizes, ratios)(ImageList(torch.zeros(1, 3, 80, 120), [(80, 120)]), features)[0]
    assert torch.equal(ours, theirs)


def test_box_coder_round_trip_and_clamp():
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    g = torch.Generator().manual_seed(0)
    refs = torch.rand(50, 2, generator=g) * 100
    refs = torch.cat([refs, refs + 5 + torch.rand(50, 2, generator=g) * 50], dim=1)
    targets = torch.rand(50, 2, generator=g) * 100
    targets = torch.cat([targets, targets + 1 + torch.rand(50, 2, generator=g) * 80], dim=1)
    decoded = coder.decode(coder.encode(targets, refs), refs)[:, 0]
    assert torch.allclose(decoded, targets, atol=1e-3)
    huge = torch.tensor([[0.0, 0.0, 1e4, 1e4]])
    box = coder.decode(huge, torch.tensor([[0.0, 0.0, 10.0, 10.0]]))[0, 0]
    assert torch.isfinite(box).all()
    assert math.isclose((box[2] - box[0]).item(), 10 * 1000 / 16, rel_tol=1e-4)  # exp clamped at log(1000/16)


def test_box_coder_decodes_per_class_variants():
    coder = BoxCoder((1.0, 1.0, 1.0, 1.0))
    refs = torch.tensor([[0.0, 0.0, 10.0, 20.0]])
    deltas = torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.1, 0.0, 0.0, 0.0]])  # two classes
    boxes = coder.decode(deltas, refs)
    assert boxes.shape == (1, 2, 4)
    assert boxes[0, 0].tolist() == [0, 0, 10, 20]
    assert torch.allclose(boxes[0, 1], torch.tensor([1.0, 0.0, 11.0, 20.0]))  # dx * width = 1 px


def _iou_rows(rows):
    return torch.tensor(rows, dtype=torch.float32)[None]  # (1, G, N)


def test_matcher_thresholds():
    iou = _iou_rows([[0.8, 0.5, 0.1, 0.0],
                     [0.0, 0.2, 0.75, 0.0]])
    matches = Matcher(0.7, 0.3)(iou, torch.tensor([[True, True]]))
    assert matches.tolist() == [[0, IGNORE, 1, BACKGROUND]]


def test_matcher_low_quality_matches_claim_best_candidates_with_ties():
    iou = _iou_rows([[0.4, 0.4, 0.1, 0.0],   # best 0.4 (below 0.7): both tied candidates claimed
                     [0.0, 0.0, 0.9, 0.0],
                     [0.0, 0.0, 0.0, 0.0]])  # touches nothing: claims nothing
    valid = torch.tensor([[True, True, True]])
    assert Matcher(0.7, 0.3)(iou, valid).tolist() == [[IGNORE, IGNORE, 1, BACKGROUND]]
    assert Matcher(0.7, 0.3, allow_low_quality_matches=True)(iou, valid).tolist() == [[0, 0, 1, BACKGROUND]]


def test_matcher_ignores_padding_and_empty_images():
    iou = torch.tensor([[[0.9, 0.0]], [[0.9, 0.0]]])  # (2 images, 1 gt slot, 2 candidates)
    valid = torch.tensor([[True], [False]])            # image 2 has no boxes: slot is padding
    assert Matcher(0.5, 0.5)(iou, valid).tolist() == [[0, BACKGROUND], [BACKGROUND, BACKGROUND]]
    assert Matcher(0.5, 0.5)(torch.zeros(2, 0, 3), torch.zeros(2, 0, dtype=torch.bool)).eq(BACKGROUND).all()


def test_sampler_ratios_per_image():
    labels = torch.full((2, 6000), -1)
    labels[0, :1000] = 1
    labels[0, 1000:6000] = 0
    labels[1, :10] = 1
    labels[1, 10:3000] = 0
    pos, neg = BalancedSampler(256, 0.5)(labels, torch.Generator().manual_seed(0))
    assert pos.sum(1).tolist() == [128, 10]
    assert neg.sum(1).tolist() == [128, 246]
    assert (labels[pos] == 1).all() and (labels[neg] == 0).all()
    assert not (pos & neg).any()


def test_sampler_box_head_quarter_positive():
    labels = torch.zeros(1, 2000, dtype=torch.long)
    labels[0, :600] = 1
    pos, neg = BalancedSampler(512, 0.25)(labels)
    assert (pos.sum().item(), neg.sum().item()) == (128, 384)


def test_proposals_nms_then_top_n_per_image():
    gen = AnchorGenerator(((16,),), ((1.0,),))
    rpn = RegionProposalNetwork(gen, RPNHead(4, 1), fg_iou_thresh=0.7, bg_iou_thresh=0.3, batch_size_per_image=256,
                                positive_fraction=0.5, pre_nms_top_n={"train": 10, "test": 10},
                                post_nms_top_n={"train": 2, "test": 2}, nms_thresh=0.7, score_thresh=0.0).eval()
    boxes = torch.tensor([[[0, 0, 10, 10], [0, 0, 10, 10.5], [20, 20, 30, 30], [40, 40, 50, 50], [0, 0, 0.0001, 5]],
                          [[0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 30, 30], [40, 40, 50, 50], [1, 1, 9, 9]]])
    logits = torch.tensor([[5.0, 4.0, 3.0, 2.0, 9.0],
                           [1.0, 2.0, 3.0, 4.0, 0.5]])
    sizes = torch.tensor([[100, 100], [100, 100]])
    props = rpn.select_proposals(boxes.float(), logits, [5], sizes)
    # image 0: the tiny box is dropped, box 1 is suppressed by box 0 (IoU 0.95): keep 0, 2
    assert props.boxes[0][props.valid[0]].tolist() == [[0, 0, 10, 10], [20, 20, 30, 30]]
    # image 1: best two by score are 3 and 2
    assert props.boxes[1][props.valid[1]].tolist() == [[40, 40, 50, 50], [20, 20, 30, 30]]
    assert torch.allclose(props.scores[1], torch.sigmoid(torch.tensor([4.0, 3.0])))


@pytest.mark.parametrize("pool_type", ["roialign", "roipool"])
def test_pooled_shape(pool_type):
    features = {str(i): torch.rand(2, 8, 64 // 2**i, 96 // 2**i) for i in range(4)}
    rois = torch.tensor([[0, 0, 0, 20, 20], [1, 10, 10, 250, 200], [1, 0, 0, 383, 255.0]])
    pool = MultiScaleRoIPool(["0", "1", "2", "3"], 7, 2, pool_type)
    out = pool(features, rois, torch.tensor([[256, 384], [256, 384]]))
    assert out.shape == (3, 8, 7, 7)


def test_roialign_equals_torchvision_multiscale():
    g = torch.Generator().manual_seed(0)
    features = {str(i): torch.rand(2, 4, 200 // 2**i, 304 // 2**i, generator=g) for i in range(4)}
    xy = torch.rand(40, 2, generator=g) * 500
    boxes = torch.cat([xy, xy + 8 + torch.rand(40, 2, generator=g) * 400], 1)
    image_sizes = [(800, 1200), (780, 1216)]
    theirs = MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2)(features, [boxes[:25], boxes[25:]], image_sizes)
    rois = torch.cat([torch.cat([torch.zeros(25, 1), torch.ones(15, 1)]), boxes], 1)
    ours = MultiScaleRoIPool(["0", "1", "2", "3"], 7, 2, "roialign")(features, rois, torch.tensor(image_sizes))
    assert torch.equal(ours, theirs)


def test_pairwise_iou_batched():
    a = torch.tensor([[[0, 0, 10, 10.0]], [[0, 0, 4, 4.0]]])
    b = torch.tensor([[0, 0, 10, 5.0], [20, 20, 30, 30.0]])
    iou = pairwise_iou(a, b)
    assert iou.shape == (2, 1, 2)
    assert torch.allclose(iou, torch.tensor([[[0.5, 0.0]], [[16 / 50, 0.0]]]))


def _crowded_regions(count: int = 600):
    """FPN maps of an 800x1088 picture and ``count`` regions, enough that each busy level is cut into chunks."""
    g = torch.Generator().manual_seed(1)
    features = {str(i): torch.rand(1, 8, 200 // 2**i, 272 // 2**i, generator=g) for i in range(4)}
    xy = torch.rand(count, 2, generator=g) * torch.tensor([900.0, 650.0])
    boxes = torch.cat([xy, xy + 8 + torch.rand(count, 2, generator=g) * 180], 1)
    return features, boxes, [(800, 1088)]


def test_roialign_cut_across_threads_equals_torchvision_bit_for_bit(monkeypatch):
    """Issue 28: RoI align ran on one thread; the regions are now pooled in chunks on a thread pool."""
    import rcnn_cli.model.roi_pool as roi_pool_module

    features, boxes, sizes = _crowded_regions()
    theirs = MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2)(features, [boxes], sizes)
    calls = []
    real = roi_pool_module._pool_all
    monkeypatch.setattr(roi_pool_module, "_pool_all", lambda *a: calls.append(len(a[1])) or real(*a))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        pool = MultiScaleRoIPool(["0", "1", "2", "3"], 7, 2, "roialign")
        ours = pool(features, torch.cat([torch.zeros(len(boxes), 1), boxes], 1), torch.tensor(sizes))
    finally:
        torch.set_num_threads(threads)
    assert calls and calls[0] > 4, "the regions were not cut into more jobs than levels"
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("state", ["no_grad", "inference_mode", "autocast_bf16", "grad"])
def test_roialign_threads_run_in_the_callers_grad_inference_and_autocast_state(state, monkeypatch):
    """torch keeps grad mode, inference mode and autocast per thread: a worker must take the caller's
    (an inference tensor in a grad-recording thread is an error; autocast changes the kernel's dtype),
    and give the same values and gradients as one thread."""
    import contextlib
    import threading

    features, boxes, sizes = _crowded_regions()
    rois = torch.cat([torch.zeros(len(boxes), 1), boxes], 1)
    if state == "autocast_bf16":
        features, rois = {name: f.bfloat16() for name, f in features.items()}, rois.bfloat16()
    contexts = {"no_grad": torch.no_grad, "inference_mode": torch.inference_mode, "grad": contextlib.nullcontext,
                "autocast_bf16": lambda: torch.autocast("cpu", dtype=torch.bfloat16)}
    seen = []
    real_pool = MultiScaleRoIPool._pool
    monkeypatch.setattr(MultiScaleRoIPool, "_pool", lambda self, *a: seen.append(
        (threading.get_ident(), torch.is_grad_enabled(), torch.is_inference_mode_enabled(),
         torch.is_autocast_enabled("cpu"))) or real_pool(self, *a))
    pool = MultiScaleRoIPool(["0", "1", "2", "3"], 7, 2, "roialign")
    results = {}
    threads = torch.get_num_threads()
    for count in (1, 2):
        torch.set_num_threads(count)
        try:
            leaf = {n: f.clone().requires_grad_() for n, f in features.items()}
            with contexts[state]():
                callers = (torch.is_grad_enabled(), torch.is_inference_mode_enabled(), torch.is_autocast_enabled("cpu"))
                out = pool(leaf, rois, torch.tensor(sizes))
            grads = torch.autograd.grad(out.float().square().sum(), list(leaf.values())) if state == "grad" else ()
            results[count] = (out, grads)
        finally:
            torch.set_num_threads(threads)
    assert {ident for ident, *_ in seen} - {threading.get_ident()}, "no region was pooled on a worker thread"
    assert {tuple(states) for _, *states in seen} == {callers}
    (one, one_grads), (two, two_grads) = results[1], results[2]
    assert one.dtype == two.dtype and torch.equal(one, two)
    assert len(one_grads) == (4 if state == "grad" else 0)
    assert all(torch.allclose(a, b) for a, b in zip(one_grads, two_grads))


def _head_outputs_and_grads(head, features, flatten):
    """Outputs of ``head`` on ``features`` as (B*A, 1) logits and (B*A, 4) deltas, and the gradients of a
    fixed random weighting of them w.r.t. every parameter and every input level."""
    features = [f.detach().clone().requires_grad_() for f in features]
    logits, deltas = flatten(head(features))
    weighting = torch.Generator().manual_seed(1)
    loss = ((logits * torch.randn(logits.shape, generator=weighting)).sum()
            + (deltas * torch.randn(deltas.shape, generator=weighting)).sum())
    loss.backward()
    grads = {name: p.grad for name, p in head.named_parameters()}
    grads.update({f"level {i}": f.grad for i, f in enumerate(features)})
    return logits, deltas, grads


@pytest.mark.parametrize("channels_last", [False, True])
def test_rpn_head_training_forward_and_gradients_equal_torchvision(channels_last):
    """In training the head runs its two 1x1 convs as one (rpn_head._siblings_as_one): the outputs and
    every gradient must be torchvision's RPNHead's with the same weights, up to float rounding."""
    from torchvision.models.detection.rpn import RPNHead as TVRPNHead
    from torchvision.models.detection.rpn import concat_box_prediction_layers

    torch.manual_seed(0)
    ours = RPNHead(16, 3).train()
    for p in ours.parameters():              # non-zero biases, weights of ordinary size
        torch.nn.init.normal_(p, std=0.1)
    theirs = TVRPNHead(16, 3).train()
    theirs.load_state_dict(ours.state_dict())
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    features = [torch.randn(2, 16, h, w).contiguous(memory_format=fmt) for h, w in ((12, 20), (6, 10), (3, 5))]

    ours_out = _head_outputs_and_grads(ours, features, lambda out: (out[0].reshape(-1, 1), out[1].reshape(-1, 4)))
    theirs_out = _head_outputs_and_grads(theirs, features, lambda out: concat_box_prediction_layers(*out))
    torch.testing.assert_close(ours_out[0], theirs_out[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours_out[1], theirs_out[1], rtol=1e-5, atol=1e-5)
    assert ours_out[2].keys() == theirs_out[2].keys() and len(ours_out[2]) == 6 + 3
    for name, grad in ours_out[2].items():
        torch.testing.assert_close(grad, theirs_out[2][name], rtol=1e-4, atol=1e-5, msg=name)


def test_rpn_head_softmax_training_path_equals_inference_path():
    """torchvision has no softmax objectness: there the training path is checked against the per-module
    inference path of the same head (2 logits per anchor, so the split point moves)."""
    torch.manual_seed(0)
    head = RPNHead(16, 3, objectness="softmax")
    for p in head.parameters():
        torch.nn.init.normal_(p, std=0.1)
    features = [torch.randn(2, 16, 12, 20), torch.randn(2, 16, 6, 10)]
    trained = head.train()(features)
    inferred = head.eval()(features)
    assert trained[0].shape == (2, (240 + 60) * 3, 2) and trained[1].shape == (2, (240 + 60) * 3, 4)
    torch.testing.assert_close(trained, inferred, rtol=1e-5, atol=1e-5)
