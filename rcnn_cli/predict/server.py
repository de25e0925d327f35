"""The HTTP service behind ``rcnn serve``: ``POST /predict`` with an image (multipart or the raw bytes)
returns the JSON ``rcnn predict --format json`` writes for one image; concurrent requests are
batched into one forward pass; ``GET /health``.

FastAPI rather than LitServe: LitServe's request decoding takes JSON or form bodies only (not raw
image bytes) and runs the model in separate worker processes, which would load the weights once more
per worker and hide the batching we want to control (requests that arrive within ``max_wait_ms``
share a forward pass, up to ``max_batch`` images).

Every bad request is a 4xx with one line and the service keeps serving: not an image or a truncated
file (400), a body over ``max_body_mb`` or a picture over ``max_pixels`` (413).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import torch
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

from ..data.images import ImageReadError, decode_bytes
from ..runtime.predictor import Predictor
from .runner import PredictOptions, keep_detections, to_result


@dataclass
class ServeLimits:
    max_body_mb: float = 20.0         # larger uploads get 413 before they are decoded
    max_pixels: int | None = None     # None: dataset.max_image_pixels' default
    max_batch: int = 8                # images per forward pass
    max_wait_ms: float = 10.0         # how long the first request of a batch waits for company


class Batcher:
    """Collects concurrent requests into batches for ``predictor.detect`` (run in a worker thread so
    the event loop keeps accepting requests)."""

    def __init__(self, predictor: Predictor, limits: ServeLimits):
        self.predictor, self.limits = predictor, limits
        self.queue: asyncio.Queue = asyncio.Queue()
        self.batches = 0                  # forward passes run, for /health and the tests

    async def detect(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        future = asyncio.get_running_loop().create_future()
        await self.queue.put((image, future))
        return await future

    async def run(self) -> None:
        while True:
            batch = [await self.queue.get()]
            deadline = time.monotonic() + self.limits.max_wait_ms / 1000
            while len(batch) < self.limits.max_batch and (left := deadline - time.monotonic()) > 0:
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), left))
                except TimeoutError:
                    break
            images = [image for image, _ in batch]
            try:
                detections = await asyncio.to_thread(self.predictor.detect, images)
                self.batches += 1
                for (_, future), detection in zip(batch, detections):
                    future.set_result(detection)
            except Exception as err:          # a failed pass fails its requests, not the service
                for _, future in batch:
                    future.set_exception(err)


def build_app(predictor: Predictor, conf: float = 0.25, limits: ServeLimits | None = None, name: str = ""):
    """The FastAPI application serving ``predictor``."""
    limits = limits or ServeLimits()
    batcher = Batcher(predictor, limits)
    options = PredictOptions(conf=conf)

    async def lifespan(app):
        task = asyncio.create_task(batcher.run())
        yield
        task.cancel()

    app = FastAPI(title="rcnn serve", lifespan=lifespan)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": name, "runs_as": predictor.runs_as, "device": str(predictor.device),
                "classes": predictor.class_names, "batches": batcher.batches}

    @app.post("/predict")
    async def predict(request: Request):
        data, filename = await _read_upload(request, limits)
        try:
            pixels = decode_bytes(data, filename or "upload", limits.max_pixels)
        except ImageReadError as err:
            status = 413 if "max_image_pixels" in str(err) else 400
            raise HTTPException(status, str(err)) from None
        image = torch.from_numpy(pixels).permute(2, 0, 1)
        detection = await batcher.detect(image)
        kept = keep_detections(detection, predictor.class_names, options)
        return JSONResponse(to_result(filename or "upload", "upload", image, kept, predictor.class_names))

    @app.exception_handler(HTTPException)
    async def one_line(request, err):
        return JSONResponse({"error": err.detail}, status_code=err.status_code)

    return app


async def _read_upload(request: Request, limits: ServeLimits) -> tuple[bytes, str | None]:
    """The image bytes of a multipart upload (its first file) or of a raw body; 413 past the limit."""
    limit = int(limits.max_body_mb * 1024 * 1024)
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"body of {int(declared):,} bytes is over the {limits.max_body_mb:g} MB limit")
    too_big = HTTPException(413, f"body over the {limits.max_body_mb:g} MB limit")
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        form = await request.form(max_files=1, max_part_size=limit)
        uploads = [value for value in form.values() if hasattr(value, "read")]
        if not uploads:
            raise HTTPException(400, "multipart body without a file; send the image as a file field")
        data, filename = await uploads[0].read(), uploads[0].filename
        if len(data) > limit:
            raise too_big
    else:
        chunks, size = [], 0
        async for chunk in request.stream():       # undeclared (chunked) bodies stop at the limit, unread past it
            size += len(chunk)
            if size > limit:
                raise too_big
            chunks.append(chunk)
        data, filename = b"".join(chunks), request.headers.get("x-filename")
    if not data:
        raise HTTPException(400, "empty body; POST the image bytes, or a multipart file")
    return data, filename
