"""`rcnn serve` (issue 18): real HTTP on the loopback address. Good images get the JSON `rcnn predict`
writes; bad requests a 4xx with one line while the service keeps serving; a bounded load test."""

from __future__ import annotations

import io
import json
import socket
import statistics
import struct
import threading
import time
import urllib.error
import urllib.request
import zlib
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import pytest
from helpers import bccd_images, run_rcnn

from rcnn_cli.commands import serve
from rcnn_cli.predict.limits import ServeLimits


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def running(options: serve.ServeOptions):
    """The service built from ``options``, served by uvicorn in a thread on 127.0.0.1 -> (url, predictor)."""
    import uvicorn

    app, predictor = serve.build(options)
    port = free_port()
    instance = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not instance.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", predictor
    finally:
        instance.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def server(tiny_run):
    """The tiny model (exact fp32, so answers are comparable)."""
    options = serve.ServeOptions(tiny_run / "checkpoints" / "best.ckpt", ["device=cpu", "model.precision=fp32"],
                                 conf=0.05, limits=ServeLimits(max_body_mb=1.0))
    with running(options) as served:
        yield served


def post(url: str, body: bytes, headers: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url + "/predict", data=body, headers=headers or {}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def multipart(data: bytes, filename: str) -> tuple[bytes, dict]:
    boundary = "rcnnboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{filename}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


CLASSES = ["circle", "square", "triangle"]     # the tiny experiment's, in label order


@pytest.fixture(scope="module")
def torch_model(tiny_run):
    """The reference: the checkpoint's torch model loaded apart from the service, exact fp32 on the CPU."""
    from rcnn_cli.api import Detector

    return Detector.load(tiny_run / "checkpoints" / "best.ckpt", device="cpu", precision="fp32").model


def reference(model, path, conf: float = 0.05) -> list[dict]:
    """The model called directly on the picture as PIL decodes it, thresholded by hand: none of the
    service's decoding, batching, thresholds or JSON."""
    import numpy as np
    import torch
    from PIL import Image

    image = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)
    with torch.inference_mode():
        found = model([image])[0]
    keep = found["scores"] >= conf
    return [{"label": CLASSES[int(label) - 1], "score": float(score), "box": [float(v) for v in box]}
            for box, score, label in zip(found["boxes"][keep], found["scores"][keep], found["labels"][keep])]


def agrees(answer: list[dict], truth: list[dict], box_px: float = 0.02, score: float = 1e-4) -> bool:
    """Same detections in the same order: labels equal, scores and boxes within the JSON's rounding (5 and
    2 decimals) plus runtime noise. A reference without detections compares nothing: it fails."""
    return bool(truth) and len(answer) == len(truth) and all(
        got["label"] == want["label"] and abs(got["score"] - want["score"]) <= score
        and max(abs(a - b) for a, b in zip(got["box"], want["box"])) <= box_px for got, want in zip(answer, truth))


def test_health_and_both_upload_forms_answer_what_the_model_detects(server, torch_model):
    url, _ = server
    with urllib.request.urlopen(url + "/health", timeout=10) as response:
        health = json.loads(response.read())
    assert health["status"] == "ok" and health["classes"] == ["circle", "square", "triangle"]
    image = bccd_images(1)[0]
    data = image.read_bytes()
    status, raw = post(url, data, {"Content-Type": "image/jpeg", "X-Filename": image.name})
    body, headers = multipart(data, image.name)
    status_form, form = post(url, body, headers)
    assert status == status_form == 200
    assert raw["detections"] == form["detections"] and agrees(raw["detections"], reference(torch_model, image))
    assert (raw["width"], raw["height"], form["image"]) == (640, 480, image.name)


def png_header(width: int, height: int) -> bytes:
    """A small real PNG whose header claims width x height (a decompression bomb's first bytes)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    data[16:24] = struct.pack(">II", width, height)                 # IHDR width, height
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # and its checksum
    return bytes(data)


@pytest.mark.parametrize("body, status, message", [
    (b"this is not an image", 400, "not an image"),
    (None, 400, "truncated"),                                    # half a JPEG
    (png_header(20_000, 20_000), 413, "rcnn serve --max-pixels"),
    ("declared", 413, "over the 1 MB limit"),                   # refused from Content-Length, unread
    (b"", 400, "empty body"),
])
def test_bad_requests_get_one_line_and_the_service_keeps_serving(server, body, status, message):
    url, _ = server
    headers = {"Content-Type": "application/octet-stream"}
    if body is None:
        body = bccd_images(1)[0].read_bytes()[:20_000]
    elif body == "declared":
        # A client announcing 1 MB + 1 byte: answered before the body is read (sending all of it would race
        # the early answer and break the client's pipe).
        body, headers["Content-Length"] = b"x" * 16, str(1024 * 1024 + 1)
    code, answer = post(url, body, headers)
    assert code == status and message in answer["error"] and "\n" not in answer["error"]
    good, _ = post(url, bccd_images(1)[0].read_bytes())
    assert good == 200


def test_200_requests_from_8_clients_all_answer_correctly(server, torch_model):
    url, _ = server
    images = bccd_images(4)
    answers = {p.name: reference(torch_model, p) for p in images}
    payloads = [(p.name, p.read_bytes()) for p in images]

    def one(index: int) -> tuple[float, bool]:
        name, data = payloads[index % len(payloads)]
        start = time.perf_counter()
        status, result = post(url, data, {"X-Filename": name})
        return time.perf_counter() - start, status == 200 and agrees(result["detections"], answers[name])

    start = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(200)))
    seconds = time.perf_counter() - start
    latencies = sorted(t for t, _ in results)
    assert all(ok for _, ok in results)
    with urllib.request.urlopen(url + "/health", timeout=10) as response:
        passes = json.loads(response.read())["batches"]
    assert passes < 200                              # concurrent requests shared forward passes
    p50, p95 = statistics.median(latencies), latencies[int(0.95 * len(latencies)) - 1]
    print(f"serve load: 200 requests, 8 clients: {200 / seconds:.1f} req/s, p50 {p50 * 1000:.0f} ms, "
          f"p95 {p95 * 1000:.0f} ms, {passes} forward passes")


def test_exported_files_are_served_like_rcnn_predict_runs_them(tiny_run, tmp_path, torch_model):
    """ONNX and OpenVINO files behind the same service answer what the checkpoint's torch model detects
    (parity: labels equal, scores within 1e-3, boxes within a pixel)."""
    weights = tiny_run / "checkpoints" / "best.ckpt"
    out = run_rcnn("export", "--weights", str(weights), "--format", "onnx,openvino", "--out",
                   str(tmp_path / "tiny.onnx"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    image = bccd_images(1)[0]
    truth = reference(torch_model, image)
    for name, runs_as in (("tiny.onnx", "onnx"), ("tiny.xml", "openvino")):
        with running(serve.ServeOptions(tmp_path / name, ["model.precision=fp32"], conf=0.05)) as (url, predictor):
            assert predictor.runs_as.startswith(runs_as)
            status, answer = post(url, image.read_bytes())
        assert status == 200 and agrees(answer["detections"], truth, box_px=1.0, score=1e-3), name
