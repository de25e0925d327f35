"""report.html (issue 19): a self-contained evaluation page, checked in a real headless Chromium:
every picture decodes, the galleries and plots are there, no console errors. The screenshot is kept
in test-artifacts/ for a person to look at."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from helpers import ROOT

from rcnn_cli.commands import evaluate

CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                  "--disable-background-networking", "--disable-component-update"]


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path:
        return path
    if os.environ.get("CI") == "true":
        pytest.fail("CI=true but Chromium is missing: `make test` installs Debian's chromium package")
    pytest.skip("Chromium is not installed (make test installs it with apt)")


@pytest.fixture(scope="module")
def report(tiny_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("eval")
    evaluate.run(evaluate.EvalOptions(tiny_run / "checkpoints" / "best.ckpt", ["trainer.accelerator=cpu"], out=out))
    return out / "report.html"


def test_the_report_is_self_contained(report):
    text = report.read_text()
    assert "http://" not in text and "https://" not in text and "<link" not in text   # nothing fetched
    assert text.count('class="gallery"') == 3 and text.count("data:image/png;base64,") == 4   # 3 PR + confusion


def test_the_report_renders_in_chromium(report):
    from playwright.sync_api import sync_playwright

    executable = chromium()
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(report.as_uri())
        page.wait_for_load_state("load")
        images, loaded = page.evaluate("[Number(document.body.dataset.images), Number(document.body.dataset.loaded)]")
        figures = page.locator(".gallery figure").count()
        widths = page.evaluate("Array.from(document.images).map(i => i.naturalWidth)")
        artefacts = ROOT / "test-artifacts"
        artefacts.mkdir(exist_ok=True)
        page.screenshot(path=str(artefacts / "eval-report.png"), full_page=True)
        browser.close()
    assert errors == []
    assert images == loaded and images == 4 + figures and figures >= 3
    assert min(widths) > 0
    assert (ROOT / "test-artifacts" / "eval-report.png").stat().st_size > 20_000
