"""Fixed-size features for each region, from the FPN level that suits its size.

Shape shorthand: B: images; R: regions over the batch; C: feature channels; S: output size (7).

Speed (issue 28's stage profile): torchvision's CPU RoI align kernel walks its regions on one thread,
so at 1,000 regions it grew to 22-33% of the bf16 and int8 paths. In eager mode the regions of each
level are cut into one chunk per torch thread and pooled on a small thread pool (the op releases the
GIL); the pooled values are the same bits. Results go back with ``index_put_``, as torchvision does:
``scatter`` with an expanded index cost a third of the pooling itself. A traced or exported graph
keeps one op per level and ``scatter`` (see ``_merge_traced``).
"""

from __future__ import annotations

import math
import threading
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import Tensor, nn
from torchvision.ops import roi_align, roi_pool

from ..ops.boxes import box_area

POOL_TYPES = ("roialign", "roipool")
MIN_REGIONS_PER_CHUNK = 64     # below this a thread hand-off costs more than the pooling it shares


class MultiScaleRoIPool(nn.Module):
    """RoIAlign (default) or the paper's RoI max pooling over one or several feature maps.

    A region of side s goes to level floor(4 + log2(s / 224)) (FPN paper, eq. 1), clamped to the
    levels present, as in torchvision's ``MultiScaleRoIAlign``.

    Args:
        featmap_names: which backbone outputs to pool from (others, e.g. ``pool``, are ignored).
        output_size: pooled side (7).
        sampling_ratio: RoIAlign samples per bin side (2); unused by RoI max pooling.
        pool_type: ``roialign`` or ``roipool``.
    """

    def __init__(self, featmap_names: list[str], output_size: int, sampling_ratio: int, pool_type: str,
                 canonical_scale: int = 224, canonical_level: int = 4):
        super().__init__()
        if pool_type not in POOL_TYPES:
            raise ValueError(f"roi_pool must be one of {POOL_TYPES}, got {pool_type!r}")
        self.featmap_names = list(featmap_names)
        self.output_size = (output_size, output_size)
        self.sampling_ratio = sampling_ratio
        self.pool_type = pool_type
        self.canonical_scale = canonical_scale
        self.canonical_level = canonical_level

    def forward(self, features: dict[str, Tensor], rois: Tensor, image_sizes: Tensor) -> Tensor:
        """features: name -> (B, C, H, W); rois: (R, 5) as (batch index, x1, y1, x2, y2) in
        network-input pixels; image_sizes: (B, 2) resized (height, width) before padding.

        Returns (R, C, output_size, output_size).
        """
        # Features come to the regions' precision, never the other way: a bf16 x2 of 800 is only
        # good to 4 px. The kernels read NCHW, so a channels_last map is converted here, once.
        maps = [features[name].to(dtype=rois.dtype, memory_format=torch.contiguous_format)
                for name in self.featmap_names if name in features]
        # Scales follow torchvision: relative to the largest unpadded image of the batch.
        largest = image_sizes.max(dim=0).values.tolist()
        scales = [_power_of_two_scale(m.shape[-2], largest[0]) for m in maps]
        levels = self._levels(rois[:, 1:], scales) if len(maps) > 1 else rois.new_zeros(len(rois), dtype=torch.int64)
        if torch.jit.is_tracing() or torch.jit.is_scripting():
            return self._merge_traced(maps, scales, rois, levels)
        jobs = [(maps[level], rois[chunk], scale, chunk) for level, scale in enumerate(scales)
                for chunk in _chunks(torch.where(levels == level)[0], rois.device)]
        pooled = _pool_all(self._pool, jobs, rois.device)
        out = rois.new_zeros((rois.shape[0], maps[0].shape[1]) + self.output_size)
        for (_, _, _, chunk), values in zip(jobs, pooled):
            out.index_put_((chunk,), values)
        return out

    def _merge_traced(self, maps: list[Tensor], scales: list[float], rois: Tensor, levels: Tensor) -> Tensor:
        if len(maps) == 1:
            return self._pool(maps[0], rois, scales[0])
        out = rois.new_zeros((rois.shape[0], maps[0].shape[1]) + self.output_size)
        for level, (feature, scale) in enumerate(zip(maps, scales)):
            in_level = torch.where(levels == level)[0]
            pooled = self._pool(feature, rois[in_level], scale).to(out.dtype)
            # scatter rather than out[in_level] = ...: an exported graph must also accept a
            # level that receives no region (a traced index_put fixes the shape it saw).
            out = out.scatter(0, in_level.view(-1, 1, 1, 1).expand_as(pooled), pooled)
        return out

    def _pool(self, feature: Tensor, rois: Tensor, scale: float) -> Tensor:
        if self.pool_type == "roipool":
            return roi_pool(feature, rois, self.output_size, spatial_scale=scale)
        return roi_align(feature, rois, self.output_size, spatial_scale=scale,
                         sampling_ratio=self.sampling_ratio, aligned=False)

    def _levels(self, boxes: Tensor, scales: list[float]) -> Tensor:
        """boxes: (R, 4) -> (R,) index into the pooled maps."""
        k_min = int(-math.log2(scales[0]))
        k_max = int(-math.log2(scales[-1]))
        side = torch.sqrt(box_area(boxes))
        eps = torch.tensor(1e-6, dtype=side.dtype, device=side.device)
        level = torch.floor(self.canonical_level + torch.log2(side / self.canonical_scale) + eps)
        return level.clamp(min=k_min, max=k_max).to(torch.int64) - k_min


def _power_of_two_scale(feature_size: int, image_size: int) -> float:
    """Feature stride as a power-of-two scale, e.g. 1/4 for a stride-4 map."""
    return 2.0 ** round(math.log2(feature_size / image_size))


def _chunks(regions: Tensor, device: torch.device) -> list[Tensor]:
    """One level's region indices cut into one chunk per torch thread (CPU only; a GPU kernel is
    already parallel), each at least MIN_REGIONS_PER_CHUNK long."""
    parts = 1 if device.type != "cpu" else min(torch.get_num_threads(), len(regions) // MIN_REGIONS_PER_CHUNK)
    return list(torch.tensor_split(regions, parts)) if parts > 1 else [regions]


_POOL_LOCK = threading.Lock()
_POOL: tuple[int, ThreadPoolExecutor] | None = None     # (threads it was made for, the pool)


def _pool_all(pool_one, jobs: list[tuple], device: torch.device) -> list[Tensor]:
    """pool_one(feature, rois, scale) for each job, on the shared pool when there are several. Grad,
    inference mode and autocast are per thread in torch, so the caller's are set in each worker: an
    inference tensor met in a grad-recording thread would be an error, and autocast changes the
    kernel's dtype."""
    global _POOL
    if len(jobs) <= 1 or torch.get_num_threads() <= 1 or device.type != "cpu":
        return [pool_one(feature, rois, scale) for feature, rois, scale, _ in jobs]
    with _POOL_LOCK:
        threads = torch.get_num_threads()
        if _POOL is None or _POOL[0] != threads:
            _POOL = (threads, ThreadPoolExecutor(threads, thread_name_prefix="roi-align"))
        pool = _POOL[1]
    grad, inference = torch.is_grad_enabled(), torch.is_inference_mode_enabled()
    autocast = torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")

    def in_callers_state(job: tuple) -> Tensor:
        with torch.inference_mode(inference), torch.set_grad_enabled(grad), \
                torch.autocast("cpu", dtype=autocast[1], enabled=autocast[0]):
            return pool_one(*job[:3])

    return list(pool.map(in_callers_state, jobs))
