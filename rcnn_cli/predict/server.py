"""The HTTP service behind ``rcnn serve``: ``POST /predict`` with an image (multipart or the raw bytes)
returns the JSON ``rcnn predict --format json`` writes for one image; concurrent requests are
batched into one forward pass; ``GET /health``.

FastAPI rather than LitServe: LitServe's request decoding takes JSON or form bodies only (not raw
image bytes) and runs the model in separate worker processes, which would load the weights once more
per worker and hide the batching we want to control (requests that arrive within ``max_wait_ms``
share a forward pass, up to ``max_batch`` images).

The event loop only reads uploads and answers; decoding and inference run in threads (``Lanes``), so
/health and small requests keep answering while a huge picture is decoded. What a request may take is
bounded (``ServeLimits``): its body, the time to send it, and its decoded pixels, read from the header.

Every bad request is a 4xx with one line and the service keeps serving: not an image or a truncated
file (400), an upload not received within ``body_timeout_s`` (408), a body over ``max_body_mb`` or a
picture over ``max_pixels`` (413). A client that hangs up is one line in the log.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from starlette.requests import ClientDisconnect

from ..data.images import ImageReadError, ImageTooLarge, decode_bytes, pixels_of_bytes
from ..inference.predictor import Predictor
from .limits import PREDICT, ServeLimits
from .runner import PredictOptions, keep_detections, to_result

__all__ = ["Batcher", "Lanes", "ServeLimits", "build_app"]

# uvicorn's own logger: our lines share its format and its --log-level, beside its own messages.
log = logging.getLogger("uvicorn.error")
PIXELS_NAME = "rcnn serve --max-pixels"     # how the user raises the budget, named when a picture is over it


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


class Lanes:
    """Where a request's decoding and inference run, never on the event loop. Pictures up to
    ``limits.large_pixels`` are decoded by a few threads and batched (``Batcher``); larger ones are decoded
    and run one at a time by a thread of their own, beside the batches: a huge picture then holds at most
    its budget of memory and keeps nobody else waiting. (An OpenVINO file with one infer request still runs
    one pass at a time; the loop stays free.)"""

    def __init__(self, predictor: Predictor, limits: ServeLimits):
        self.predictor, self.limits = predictor, limits
        self.batcher = Batcher(predictor, limits)
        self.decoders = ThreadPoolExecutor(limits.decode_threads, thread_name_prefix="rcnn-decode")
        self.large = ThreadPoolExecutor(1, thread_name_prefix="rcnn-large")
        self.large_runs = 0               # pictures run alone, for /health

    async def detect(self, data: bytes, label: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(image, its detections); ImageTooLarge (from the header, nothing decoded) or ImageReadError."""
        loop = asyncio.get_running_loop()
        pixels = await loop.run_in_executor(self.decoders, pixels_of_bytes, data, label, self.limits.max_pixels,
                                            PIXELS_NAME)
        if pixels > self.limits.large_pixels:
            return await loop.run_in_executor(self.large, self._alone, data, label)
        image = await loop.run_in_executor(self.decoders, self._decode, data, label)
        return image, await self.batcher.detect(image)

    def _decode(self, data: bytes, label: str) -> torch.Tensor:
        return torch.from_numpy(decode_bytes(data, label, self.limits.max_pixels, PIXELS_NAME)).permute(2, 0, 1)

    def _alone(self, data: bytes, label: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        image = self._decode(data, label)
        detection = self.predictor.detect([image])[0]
        self.large_runs += 1
        return image, detection

    def close(self) -> None:
        for pool in (self.decoders, self.large):
            pool.shutdown(wait=False, cancel_futures=True)


def build_app(predictor: Predictor, conf: float = PREDICT.conf, limits: ServeLimits | None = None, name: str = ""):
    """The FastAPI application serving ``predictor``."""
    limits = limits or ServeLimits()
    lanes = Lanes(predictor, limits)
    options = PredictOptions(conf=conf)

    async def lifespan(app):
        task = asyncio.create_task(lanes.batcher.run())
        yield
        task.cancel()
        lanes.close()

    app = FastAPI(title="rcnn serve", lifespan=lifespan)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "model": name, "runs_as": predictor.runs_as, "device": str(predictor.device),
                "classes": predictor.class_names, "batches": lanes.batcher.batches, "large": lanes.large_runs}

    @app.post("/predict")
    async def predict(request: Request):
        try:
            data, filename = await _read_upload(request, limits)
        except ClientDisconnect:
            log.warning("%s disconnected during its upload; nothing to answer", _client(request))
            return Response(status_code=400)      # never sent: there is no one to send it to
        label = filename or "upload"
        try:
            image, detection = await lanes.detect(data, label)
        except ImageTooLarge as err:
            raise HTTPException(413, str(err)) from None
        except ImageReadError as err:
            raise HTTPException(400, str(err)) from None
        kept = keep_detections(detection, predictor.class_names, options)
        if await request.is_disconnected():
            log.warning("%s disconnected before its answer (%s)", _client(request), label)
        return JSONResponse(to_result(label, "upload", image, kept, predictor.class_names))

    @app.exception_handler(HTTPException)
    async def one_line(request, err):
        return JSONResponse({"error": err.detail}, status_code=err.status_code, headers=err.headers)

    return app


def _client(request: Request) -> str:
    return f"client {request.client.host}:{request.client.port}" if request.client else "a client"


async def _read_upload(request: Request, limits: ServeLimits) -> tuple[bytes, str | None]:
    """``_read_body`` within ``body_timeout_s``: a client that stalls (or trickles, to hold a connection)
    gets 408 and its connection closed, instead of a coroutine and a buffer held for ever."""
    try:
        async with asyncio.timeout(limits.body_timeout_s):
            return await _read_body(request, limits)
    except TimeoutError:
        log.warning("%s: upload not received within %g s: 408", _client(request), limits.body_timeout_s)
        raise HTTPException(408, f"upload not received within {limits.body_timeout_s:g} s "
                            "(rcnn serve --body-timeout raises the limit)", {"Connection": "close"}) from None


async def _read_body(request: Request, limits: ServeLimits) -> tuple[bytes, str | None]:
    """The image bytes of a multipart upload (its first file) or of a raw body; 413 past the limit."""
    limit = int(limits.max_body_mb * 1024 * 1024)
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"body of {int(declared):,} bytes is over the {limits.max_body_mb:g} MB limit "
                            "(rcnn serve --max-body-mb raises it)")
    too_big = HTTPException(413, f"body over the {limits.max_body_mb:g} MB limit (rcnn serve --max-body-mb raises it)")
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
