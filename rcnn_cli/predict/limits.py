"""What one ``rcnn serve`` request may take. The one place each default is written: ``rcnn serve``'s
options, ``ServeOptions`` and ``build_app`` all start from ``ServeLimits()``. Kept free of heavy imports
so that the command line can show these defaults without loading torch."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PredictDefaults:
    """What predict, serve, eval --tile and the Python API use unless told otherwise; the one place
    each is written (the command line shows them without importing torch)."""

    conf: float = 0.25          # score threshold of the detections shown (the model keeps down to box_score_thresh)
    batch_size: int = 4         # images per forward pass
    tile_overlap: float = 0.2   # --tile: neighbouring tiles overlap by this share of a tile


PREDICT = PredictDefaults()


@dataclass(frozen=True)
class ServeLimits:
    max_body_mb: float = 20.0       # larger uploads get 413 before they are read
    # Decoded pixels per request, checked from the header: a request takes 35-38 bytes of working memory per
    # pixel (decoded copies, the float and normalised image: 1.2 GB measured for 36 MP, 4.6 GB in issue 26 for
    # 121 MP), so 40 MP (an 8K frame, most cameras' full size) is about 1.5 GB. dataset.max_image_pixels
    # (144 MP) guards training data, not a shared service.
    max_pixels: int = 40_000_000
    max_batch: int = 8              # images per forward pass
    max_wait_ms: float = 10.0       # how long the first request of a batch waits for company
    body_timeout_s: float = 60.0    # to receive a whole upload: 20 MB at 2.7 Mbit/s; a stalled one gets 408
    # Threads decoding small pictures (up to large_pixels each) at once; more would only contend for the cores.
    decode_threads: int = 4

    @property
    def large_pixels(self) -> int:
        """Pictures above this run one at a time beside the batches, never inside one: a batch of
        ``max_batch`` pictures then holds at most one request's budget of pixels, and small requests are
        never queued behind a big one."""
        return self.max_pixels // self.max_batch
