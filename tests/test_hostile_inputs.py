"""Hostile inputs, second round (issue 26): output that would land on the inputs, Rich markup in names,
source lists and symlinks that loop, training settings that would crash after the run has started, and
an output folder that cannot be written. Each is one line (exit 2) before any work, or a named skip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from rcnn_cli.data.sources import expand_sources

PICTURES = ("a.jpg", "b.jpg")


def photos(folder: Path, count: int = 2) -> dict[str, bytes]:
    """``count`` small pictures (a.jpg, b.jpg) in ``folder``; returns name -> bytes of everything in it,
    to show afterwards that nothing was overwritten."""
    folder.mkdir(parents=True, exist_ok=True)
    for seed, name in enumerate(PICTURES[:count]):
        pixels = np.random.RandomState(seed).randint(0, 255, (48, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / name)
    return {p.name: p.read_bytes() for p in folder.iterdir()}


# item 6: source lists and symlinks that loop

def test_a_source_list_that_lists_itself_names_the_loop(tmp_path, monkeypatch):
    photos(tmp_path, 1)
    monkeypatch.chdir(tmp_path)
    picture = PICTURES[0]
    Path("self.txt").write_text(f"{picture}\nself.txt\n")
    Path("a.txt").write_text("b.txt\n")
    Path("b.txt").write_text(f"a.txt\n{picture}\n")
    for source, loop in (("self.txt", "self.txt -> self.txt"), ("a.txt", "a.txt -> b.txt -> a.txt")):
        images, _, problems = expand_sources([source])
        assert [p.name for p in images] == [picture]
        assert problems == [f"{loop}: the source lists name each other in a loop; read once"]


def test_looping_symlinks_in_a_folder_are_named_in_the_skipped_list(tmp_path):
    photos(tmp_path, 1)
    (tmp_path / "self.jpg").symlink_to("self.jpg")
    (tmp_path / "ping.jpg").symlink_to("pong.jpg")
    (tmp_path / "pong.jpg").symlink_to("ping.jpg")
    (tmp_path / "gone.png").symlink_to("nowhere.png")
    images, _, problems = expand_sources([str(tmp_path)])
    assert [p.name for p in images] == [PICTURES[0]]
    assert sorted(Path(p.split(":")[0]).name for p in problems) == ["gone.png", "ping.jpg", "pong.jpg", "self.jpg"]
    assert any("symlink loop" in p for p in problems) and any("points to nothing" in p for p in problems)
