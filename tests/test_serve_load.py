"""`rcnn serve` under one unlucky operator's load (issue 26, item 2): a huge-but-legal picture in flight
must not stall /health or small requests; a picture over the per-request pixel budget is refused from its
header; a stalled upload gets 408; a client that hangs up is one log line, not a traceback.

The server is the real command in a subprocess, so its stderr is exactly what an operator would read."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
from helpers import tiny_images
from test_serve import free_port, png_header, post

from rcnn_cli.predict.limits import ServeLimits

BODY_TIMEOUT = 1.5         # seconds: --body-timeout of the test server, short so a stall is seen quickly
BIG = 6000                 # a 6000x6000 flat PNG: 0.5 MB, 36 MP, about a second of decoding and resizing


@dataclass
class Served:
    url: str
    port: int
    stderr: Path

    def log(self) -> str:
        return self.stderr.read_text(errors="replace")


@pytest.fixture(scope="module")
def served(tiny_run, tmp_path_factory):
    """`rcnn serve` of the tiny checkpoint on a free loopback port, its stderr in a file."""
    port, log = free_port(), tmp_path_factory.mktemp("serve") / "stderr.txt"
    command = [sys.executable, "-m", "rcnn_cli.cli", "serve", "--weights", str(tiny_run / "checkpoints" / "best.ckpt"),
               "device=cpu", "model.precision=fp32", "--port", str(port), "--body-timeout", str(BODY_TIMEOUT)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1", "COLUMNS": "200"}
    with open(log, "w") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, env=env)
    server = Served(f"http://127.0.0.1:{port}", port, log)
    try:
        wait_until_healthy(server, process)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


def wait_until_healthy(server: Served, process: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert process.poll() is None, f"rcnn serve exited {process.returncode}:\n{server.log()[-3000:]}"
        try:
            health(server, 2)
            return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"rcnn serve did not answer /health within {seconds:g} s:\n{server.log()[-3000:]}")


def health(server: Served, timeout: float) -> dict:
    with urllib.request.urlopen(server.url + "/health", timeout=timeout) as response:
        return json.loads(response.read())


@cache
def flat_png(width: int, height: int) -> bytes:
    """A huge picture that is cheap to send: one colour compresses to almost nothing."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (90, 120, 200)).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def timed(call, *args):
    start = time.monotonic()
    result = call(*args)
    return time.monotonic() - start, result, time.monotonic()


def probe(served: Served, small: bytes) -> tuple[float, float, float]:
    """(seconds /health took, seconds a small request took, when it was answered)."""
    health_s, status, _ = timed(health, served, 10)
    small_s, (code, answer), done = timed(post, served.url, small)
    assert status["status"] == "ok" and code == 200 and answer["width"] == 128, answer
    return health_s, small_s, done


def test_health_and_small_requests_answer_while_a_huge_image_is_in_flight(served):
    """Probes every 0.2 s for as long as the huge picture is in flight, through its decoding and its
    inference: a probe waiting behind either (on the event loop, or in the same forward pass) is slow."""
    big, small = flat_png(BIG, BIG), tiny_images(1)[0].read_bytes()
    probes = []
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(timed, post, served.url, big)
        for _ in range(100):                  # bounded: the big one takes a few seconds
            time.sleep(0.2)
            if pending.done():
                break
            probes.append(probe(served, small))
        big_s, (big_status, big_answer), big_done = pending.result(timeout=120)
    assert big_status == 200 and (big_answer["width"], big_answer["height"]) == (BIG, BIG)
    slowest_health, slowest_small = max(p[0] for p in probes), max(p[1] for p in probes)
    assert slowest_health < 0.5, f"/health took {slowest_health:.2f} s behind a {BIG}x{BIG} picture"
    assert slowest_small < 1.0, f"a small request took {slowest_small:.2f} s behind a {BIG}x{BIG} picture"
    during = [p for p in probes if p[2] < big_done]   # else the test proved nothing: it never overlapped
    assert len(during) >= 2, f"only {len(during)} probes answered while the big picture ran ({big_s:.1f} s)"
    print(f"serve with a {BIG}x{BIG} picture in flight ({big_s:.1f} s), {len(probes)} probes: slowest /health "
          f"{slowest_health * 1000:.0f} ms, slowest small request {slowest_small * 1000:.0f} ms")


def test_an_image_over_the_pixel_budget_is_refused_from_its_header(served):
    # The 11000x11000 PNG (121 MP: under dataset.max_image_pixels, over serve's budget). Only its
    # header is real: decoding it would fail as truncated (400), so a 413 says the header alone was read.
    status, answer = post(served.url, png_header(11_000, 11_000))
    error = answer["error"]
    assert status == 413 and "\n" not in error, answer
    assert "--max-pixels" in error and f"{ServeLimits().max_pixels:,}" in error and "121,000,000" in error


def send_part_of_a_body(port: int) -> socket.socket:
    """A connection that has sent its headers and 1 KB of a 100 KB body, then goes quiet."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=BODY_TIMEOUT + 10)
    sock.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
                 b"Content-Length: 100000\r\n\r\n" + b"\x89PNG\r\n\x1a\n" + bytes(1016))
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    """All the server sends until it closes the connection; each wait bounded by the socket's timeout."""
    reply = b""
    for _ in range(100):
        chunk = sock.recv(65536)
        if not chunk:
            break
        reply += chunk
    return reply


def test_a_stalled_upload_gets_408_within_its_deadline(served):
    with send_part_of_a_body(served.port) as sock:
        start = time.monotonic()
        reply = read_until_closed(sock)       # the 408 comes with Connection: close
        waited = time.monotonic() - start
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), reply[:200]
    assert waited < BODY_TIMEOUT + 2, f"408 came after {waited:.1f} s"
    error = json.loads(body)["error"]
    assert "--body-timeout" in error and "\n" not in error
    assert health(served, 5)["status"] == "ok"


def send_a_whole_request(port: int) -> socket.socket:
    """A connection that has sent a whole request, the huge picture, and will not wait for its answer."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    data = flat_png(BIG, BIG)
    sock.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(data) + data)
    time.sleep(0.5)     # the server has read it all (else the hang-up is one during the upload) and is decoding
    return sock


@pytest.mark.parametrize("when, connect", [("during its upload", send_part_of_a_body),
                                           ("before its answer", send_a_whole_request)])
def test_a_client_that_disconnects_mid_request_is_one_log_line(served, when, connect):
    before = len(served.log())
    connect(served.port).close()              # hangs up: with 99 KB of the body unsent, or while it runs
    deadline = time.monotonic() + 30       # the huge picture is decoded and run first
    while len(served.log()) == before and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.3)                           # the whole of what it logs, not its first line
    written = served.log()[before:]
    lines = [line for line in written.splitlines() if line.strip()]
    assert len(lines) == 1 and f"disconnected {when}" in lines[0] and "Traceback" not in written, written[-3000:]
    assert health(served, 5)["status"] == "ok"
