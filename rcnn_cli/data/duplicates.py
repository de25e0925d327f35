"""Exact and near-duplicate images (perceptual hash), within a split and across splits (leakage)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

# Hamming distance (of 64) between perceptual hashes at or below which two pictures look alike.
NEAR_DISTANCE = 6


def file_digest(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


def perceptual_hash(path: Path) -> int | None:
    """64-bit pHash of the decoded image (EXIF applied), or None when it cannot be decoded
    (the readers already report such files)."""
    import imagehash
    from PIL import Image

    from .images import to_rgb_array

    try:
        with Image.open(path) as opened:
            # pHash looks at a 32x32 thumbnail: let JPEG decode at 1/2..1/8 scale, which makes
            # checking a large set several times faster. Other formats ignore the hint.
            opened.draft("RGB", (128, 128))
            opened.load()
            bits = imagehash.phash(Image.fromarray(to_rgb_array(opened))).hash.flatten()
    except (OSError, SyntaxError, ValueError):   # missing, truncated, not an image, too large
        return None
    return int("".join("1" if b else "0" for b in bits), 2)


# Set bits of every byte value, for counting differing hash bits on numpy < 2 (no bitwise_count).
_BYTE_BITS = np.array([bin(v).count("1") for v in range(256)], np.uint8)


def _popcount(values: np.ndarray) -> np.ndarray:
    """values: (...,) uint64 -> (...,) number of set bits."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(values)
    as_bytes = np.ascontiguousarray(values).view(np.uint8).reshape(*values.shape, 8)
    return _BYTE_BITS[as_bytes].sum(axis=-1, dtype=np.int64)


def near_pairs(hashes: np.ndarray, max_distance: int = NEAR_DISTANCE, chunk: int = 512) -> list[tuple[int, int]]:
    """Index pairs (i < j) whose 64-bit hashes differ in at most ``max_distance`` bits.

    hashes: (N,) uint64. Compared in row chunks so memory stays at chunk x N.
    """
    pairs = []
    for start in range(0, len(hashes), chunk):
        block = hashes[start:start + chunk]
        distance = _popcount(block[:, None] ^ hashes[None, :])
        rows, cols = np.nonzero(distance <= max_distance)
        keep = cols > rows + start
        pairs += list(zip((rows[keep] + start).tolist(), cols[keep].tolist()))
    return pairs


def find_duplicates(splits: dict[str, list[Path]]) -> list[dict]:
    """[{"kind": "exact" | "near", "a": path, "b": path, "splits": "train/val"}], one per pair."""
    items = [(split, path) for split, paths in splits.items() for path in paths]
    digests = [file_digest(path) for _, path in items]
    hashes = [perceptual_hash(path) for _, path in items]
    valid = [i for i, h in enumerate(hashes) if h is not None]
    found = []
    for i, j in near_pairs(np.array([hashes[i] for i in valid], dtype=np.uint64)):
        a, b = valid[i], valid[j]
        found.append({"kind": "exact" if digests[a] == digests[b] else "near",
                      "a": str(items[a][1]), "b": str(items[b][1]),
                      "splits": items[a][0] if items[a][0] == items[b][0] else f"{items[a][0]}/{items[b][0]}"})
    by_digest: dict[str, int] = {}
    for index, digest in enumerate(digests):     # identical bytes that could not be decoded
        if hashes[index] is None and digest in by_digest:
            other = by_digest[digest]
            found.append({"kind": "exact", "a": str(items[other][1]), "b": str(items[index][1]),
                          "splits": items[other][0] if items[other][0] == items[index][0]
                          else f"{items[other][0]}/{items[index][0]}"})
        by_digest.setdefault(digest, index)
    return found
