"""Overlapping windows over a large picture: the geometry shared by tiled training and tiled inference."""

from __future__ import annotations


def tile_windows(height: int, width: int, tile: int, overlap: float) -> list[tuple[int, int, int, int]]:
    """(x0, y0, x1, y1) windows of at most ``tile`` px covering the picture, neighbours overlapping
    by ``overlap`` x tile; the last row and column are shifted back to end at the border."""
    if not 0 <= overlap < 1:
        raise ValueError(f"--overlap {overlap}: must be in [0, 1)")
    stride = max(1, round(tile * (1 - overlap)))

    def starts(size: int) -> list[int]:
        if size <= tile:
            return [0]
        positions = list(range(0, size - tile, stride)) + [size - tile]
        return sorted(set(positions))

    return [(x, y, min(x + tile, width), min(y + tile, height)) for y in starts(height) for x in starts(width)]
