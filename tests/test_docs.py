"""The documentation holds together: the MkDocs site (mkdocs.yml, docs/) builds with --strict, so a broken link
or anchor, or a page left out of the nav, fails here as it fails `make docs`; and the README, the front door,
stays short, links only to files (and headings) that exist, and names only make targets the Makefile has."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
MAX_README_LINES = 250
# [text](target) or [text](target "title"); images ![..](..) too
LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
CODE_SPAN = re.compile(r"`[^`\n]*`")
# Paths that only exist on one machine (a developer's home or checkout), never in docs a user reads.
MACHINE_PATH = re.compile(r"(?<![\w.])/(?:work|home|Users)/\w")


def require_mkdocs() -> None:
    try:
        import material  # noqa: F401
        import mkdocs  # noqa: F401
    except ImportError as err:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but the docs tools are missing ({err}); they are in the dev extra")
        pytest.skip(f"mkdocs-material not installed ({err}); pip install -e '.[dev]'")


def prose(markdown: str) -> str:
    """The text outside fenced code blocks and code spans, where a link is a link."""
    return CODE_SPAN.sub("", FENCE.sub("", markdown))


def relative_links(markdown: str) -> list[str]:
    targets = LINK.findall(prose(markdown))
    return [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t) and not t.startswith("#")]


def heading_anchors(markdown: str) -> set[str]:
    """The anchors Python-Markdown's toc gives the headings (GitHub's agree for plain headings)."""
    anchors = set()
    for line in FENCE.sub("", markdown).splitlines():
        if match := re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line):
            text = unicodedata.normalize("NFKD", match.group(1).replace("`", "")).encode("ascii", "ignore").decode()
            text = re.sub(r"[^\w\s-]", "", text).strip().lower()
            anchors.add(re.sub(r"[-\s]+", "-", text))
    return anchors


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in relative_links(page.read_text()):
        path_part, _, anchor = target.partition("#")
        path = (page.parent / path_part).resolve()
        if not path.exists():
            broken.append(f"{target}: no such file")
        elif anchor and path.suffix == ".md" and anchor not in heading_anchors(path.read_text()):
            broken.append(f"{target}: no heading with that anchor in {path.name}")
    return broken


def test_the_docs_site_builds_with_strict(tmp_path):
    require_mkdocs()
    site = tmp_path / "site"
    out = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
         "--site-dir", str(site)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    pages = sorted(DOCS.glob("*.md"))
    assert len(pages) >= 10, "docs/ lost its pages"
    built = [site / ("index.html" if p.stem == "index" else f"{p.stem}/index.html") for p in pages]
    assert [p for p in built if not p.is_file()] == []


def test_the_readme_is_a_front_door_not_a_manual():
    lines = README.read_text().count("\n")
    assert lines < MAX_README_LINES, f"README.md has {lines} lines; move detail into docs/ (limit {MAX_README_LINES})"


def test_every_relative_link_in_the_readme_points_to_a_file_that_exists():
    links = relative_links(README.read_text())
    assert len(links) >= 5, f"the README should link its docs pages; found {links}"
    assert broken_links(README) == []


def test_the_readme_names_only_make_targets_the_makefile_has():
    targets = set(re.findall(r"^([A-Za-z][\w-]*)\s*:(?!=)", (ROOT / "Makefile").read_text(), re.M))
    named = set(re.findall(r"\bmake ([a-z][\w-]*)", README.read_text()))
    assert {"demo", "test", "lint", "docs"} <= named
    assert named - targets == set()


def test_no_machine_specific_paths_in_the_readme_or_the_docs():
    pages = [README, *sorted(DOCS.glob("*.md"))]
    found = [f"{page.name}: {match.group(0)}" for page in pages for match in MACHINE_PATH.finditer(page.read_text())]
    assert found == []


@pytest.mark.parametrize("markdown, expected", [
    ("[a](docs/x.md) `[b](no.md)` [c](https://x.org) [d](#top)\n```\n[e](f.md)\n```\n", ["docs/x.md"]),
    ("![pic](img/p.png \"title\")", ["img/p.png"]),
])
def test_the_link_finder_finds_relative_links_outside_code(markdown, expected):
    assert relative_links(markdown) == expected


def test_heading_anchors_follow_the_toc_slugs():
    assert heading_anchors("## `make demo`\n### BCCD on a GPU, with and without repeat factors\n") == {
        "make-demo", "bccd-on-a-gpu-with-and-without-repeat-factors"}
