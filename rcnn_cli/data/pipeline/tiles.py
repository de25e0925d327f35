"""Training on tiles of huge pictures (``dataset.tile``): each training image larger than the tile is
cut into the same overlapping grid that tiled inference uses (``ops.windows.tile_windows``), so an
8,000 px picture is seen at native resolution instead of being shrunk whole to ``model.min_size``.

Box rule: a box cut by a tile edge is kept, clipped to the tile, when at least ``min_visibility`` of
its area lies inside the tile; otherwise it is dropped from that tile (the overlap usually shows it
better in a neighbour). Boxes keep their labels and ignore flags.

Tiles are records (``TileRecord``): everything that works on training records (the aspect-ratio
sampler, repeat factors, anchor fit) works on tiles unchanged, with the tile as the picture.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ...ops.windows import tile_windows
from ..records import ImageRecord

Window = tuple[int, int, int, int]      # (x0, y0, x1, y1) in the source picture's pixels


@dataclass
class TileRecord(ImageRecord):
    """One tile of ``source``: width/height are the tile's, boxes are in tile pixels (cut by the rule)."""

    window: Window = (0, 0, 0, 0)
    source: ImageRecord | None = field(default=None, repr=False)
    tile_of: int = 0                    # the source's position in the split: tiles of one picture share it


def cut_boxes(boxes: np.ndarray, window: Window, min_visibility: float) -> tuple[np.ndarray, np.ndarray]:
    """(kept boxes clipped to the window, in window pixels (M, 4) float32; (N,) bool keep mask).
    A box is kept when its area inside the window is at least ``min_visibility`` of its whole area
    (boxes of zero area, which sanitize already drops, are kept only when they lie inside)."""
    x0, y0, x1, y1 = window
    clipped = np.stack([boxes[:, 0].clip(x0, x1), boxes[:, 1].clip(y0, y1),
                        boxes[:, 2].clip(x0, x1), boxes[:, 3].clip(y0, y1)], axis=1).reshape(-1, 4)
    inside = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    whole = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    visible = (inside > 0) & (inside >= min_visibility * whole)       # > 0: at 0 a box must still touch the tile
    keep = np.where(whole > 0, visible, (clipped == boxes).all(axis=1))
    offset = np.array([x0, y0, x0, y0], np.float32)
    return (clipped[keep] - offset).astype(np.float32), keep


def cut_record(record: ImageRecord, window: Window, min_visibility: float, tile_of: int) -> TileRecord:
    boxes, keep = cut_boxes(record.boxes, window, min_visibility)
    return TileRecord(record.path, window[2] - window[0], window[3] - window[1], boxes, record.labels[keep],
                      record.ignore[keep], record.source_id, window=window, source=record, tile_of=tile_of)


def tile_records(records: Sequence[ImageRecord], tile: int, overlap: float, min_visibility: float,
                 empty_share: float = 1.0, seed: int = 0, use_ignored: bool = False) -> list[ImageRecord]:
    """The training items: the tiles of each record larger than ``tile`` (either side), in grid order,
    and every other record whole, as it is. ``empty_share``: the share of cut tiles without a trained-on
    box that is kept (1: all; background matters), picked by ``seed`` so every DDP rank keeps the same."""
    items: list[ImageRecord] = []
    for position, record in enumerate(records):
        if max(record.width, record.height) <= tile:
            items.append(record)
            continue
        items += [cut_record(record, window, min_visibility, position)
                  for window in tile_windows(record.height, record.width, tile, overlap)]
    return drop_empty_tiles(items, empty_share, seed, use_ignored) if empty_share < 1 else items


def drop_empty_tiles(items: list[ImageRecord], empty_share: float, seed: int, use_ignored: bool
                     ) -> list[ImageRecord]:
    trained = [(r.labels if use_ignored else r.labels[~r.ignore]).size for r in items]
    empty = [i for i, r in enumerate(items) if isinstance(r, TileRecord) and not trained[i]]
    rng = np.random.default_rng(seed)
    dropped = set(rng.permutation(empty)[round(empty_share * len(empty)):].tolist())
    return [r for i, r in enumerate(items) if i not in dropped]


def source_positions(items: Sequence[ImageRecord]) -> list[int]:
    """Per item, which picture it comes from (tiles of one picture share a number; whole records get
    their own): the sampler keeps a picture's tiles together so one decode serves several tiles."""
    positions, next_free = [], max((r.tile_of for r in items if isinstance(r, TileRecord)), default=-1) + 1
    for record in items:
        if isinstance(record, TileRecord):
            positions.append(record.tile_of)
        else:
            positions.append(next_free)
            next_free += 1
    return positions


def tiling_summary(records: Sequence[ImageRecord], items: Sequence[ImageRecord]) -> dict[str, int]:
    """What tiling made of the training records, for ``rcnn data check`` and the training log."""
    tiles = [r for r in items if isinstance(r, TileRecord)]
    return {"images": len(records), "cut_images": len({t.tile_of for t in tiles}), "tiles": len(tiles),
            "empty_tiles": sum(1 for t in tiles if not t.num_boxes), "items": len(items)}
