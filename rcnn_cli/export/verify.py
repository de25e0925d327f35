"""An exported file proves itself: it must detect what the torch model detects.

Checked on several images including two sizes and a portrait one, so that a size frozen into
the graph at trace time shows up as a failure rather than as wrong boxes in production.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..data.samples import sample_images
from ..errors import UsageError
from ..eval.agreement import Agreement, compare_detections
from ..inference.exported import ExportedDetector, ExportError
from ..inference.precision import MIN_AGREEMENT_MAP50 as MIN_AGREEMENT_MAP50_REDUCED
from ..timing import timed_each

BOX_TOLERANCE = 1e-2        # pixels, on matched detections above the score threshold
SCORE_TOLERANCE = 1e-3
MIN_AGREEMENT_MAP50 = 0.999
# A reduced precision (int8, fp16) rounds, so it is held to detecting what fp32 detects: the one
# threshold of inference/precision.py.
MIN_REDUCED_AGREEMENT_MAP50 = MIN_AGREEMENT_MAP50_REDUCED


@dataclass
class Verification:
    """agreement: detections compared; sizes: (height, width) of the images checked; torch_ms,
    exported_ms: median per-image latency of eager torch and of the exported file."""

    agreement: Agreement
    sizes: list[tuple[int, int]]
    torch_ms: float
    exported_ms: float

    @property
    def passed(self) -> bool:
        return self.agreement.passes(BOX_TOLERANCE, SCORE_TOLERANCE, MIN_AGREEMENT_MAP50)

    def figures(self, min_map50: float | None = None) -> dict:
        """What the check measured, for ``rcnn export --json``; min_map50: the agreement the file was held
        to (None: the exact graph's, MIN_AGREEMENT_MAP50)."""
        agreement = self.agreement
        return {"images": len(self.sizes), "compared": agreement.compared, "matched": agreement.matched,
                "tied": agreement.tied, "unmatched": agreement.unmatched,
                "max_box_diff_px": agreement.max_box_diff, "max_score_diff": agreement.max_score_diff,
                "agreement_map50": agreement.map50,
                "min_agreement_map50": MIN_AGREEMENT_MAP50 if min_map50 is None else min_map50,
                "torch_ms": self.torch_ms, "exported_ms": self.exported_ms}


def check_images(sources: list[str] | None, dataset_cfg: dict | None, count: int = 3) -> list[Tensor]:
    """(3, H, W) uint8 images for the check: from ``sources`` (--images), else the model's validation
    data when it is on this machine; plus a portrait crop of the first and that crop turned
    landscape, so the set always holds several sizes and both orientations. No real images is one
    line: a check on made-up pictures, in which the model may detect nothing, proves nothing."""
    samples = sample_images(sources, dataset_cfg, count)
    if not samples:
        raise UsageError(f"no real images to check the exported file on ({samples.origin}); pass --images "
                         "'DIR/*.jpg' with a few pictures of the kind the model will see")
    images = [image.contiguous() for image in samples.images]
    side = min(images[0].shape[-2:])
    portrait = images[0][:, :side, : max(side * 2 // 3, 1)]
    return images + [portrait.contiguous(), portrait.transpose(1, 2).contiguous()]


def _timed(fn, images: list[Tensor]) -> tuple[list[dict], float]:
    # two warm-ups: first-call allocations, and TorchScript optimises its graph on the 2nd run
    outputs, seconds = timed_each(fn, images, warmup=2)
    return outputs, seconds * 1000


def verify_export(model: torch.nn.Module, exported: ExportedDetector, images: list[Tensor]) -> Verification:
    """Run the eager model and the exported file on the same images, one at a time, and compare."""
    device = next(model.parameters()).device
    model.eval()

    def eager(image: Tensor) -> dict:
        with torch.inference_mode():
            return {k: v.cpu() for k, v in model([image.to(device)])[0].items()}

    reference, torch_ms = _timed(eager, images)

    def run_exported(image: Tensor) -> dict:
        try:
            return exported.detect([image])[0]
        except Exception as err:   # onnxruntime and TorchScript raise their own error types
            height, width = image.shape[-2:]
            raise ExportError(f"the exported graph failed on a {width}x{height} image: "
                              f"{str(err).strip().splitlines()[-1][:300]}") from err

    candidate, exported_ms = _timed(run_exported, images)
    agreement = compare_detections(reference, candidate, len(exported.class_names), exported.score_threshold,
                                   SCORE_TOLERANCE)
    sizes = [tuple(int(v) for v in image.shape[-2:]) for image in images]
    return Verification(agreement, sizes, torch_ms, exported_ms)
