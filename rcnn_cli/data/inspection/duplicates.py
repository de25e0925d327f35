"""Exact and near-duplicate images (perceptual hash), within a split and across splits (leakage),
reported as groups: each set of identical or look-alike images once, however many copies it has.

Time and memory are linear in the number of images: identical hashes are merged first, and
look-alike hashes are found by multi-index hashing (two hashes within ``NEAR_DISTANCE`` bits agree
exactly on at least two of their eight bytes, so only hashes sharing such a byte pair are compared),
never by building every pair."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np

# Hamming distance (of 64) between perceptual hashes at or below which two pictures look alike.
NEAR_DISTANCE = 6


def file_digest(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


@dataclass
class Fingerprint:
    """What one read of an image file tells: its bytes' digest, its pHash and its header.

    digest: sha1 of the bytes ("" when the file cannot be read). phash: 64-bit pHash of the decoded
    picture (EXIF applied), None when it does not decode. size: stored (width, height) and
    orientation: EXIF 1..8, from the header; error: why the image cannot be used, else "".
    """

    digest: str
    phash: int | None
    size: tuple[int, int] = (0, 0)
    orientation: int = 1
    error: str = ""


def fingerprint(path: Path, max_pixels: int | None = None) -> Fingerprint:
    """Digest, header and pHash of one image, decoding it once (at 1/2..1/8 scale for JPEG)."""
    import imagehash
    from PIL import Image

    from ..images import ORIENTATION, ImageReadError, open_image, to_rgb_array

    try:
        digest = file_digest(path)
    except OSError as err:
        return Fingerprint("", None, error=f"cannot be read ({err.strerror or err})")
    try:
        with open_image(path, max_pixels) as opened:
            size = opened.size
            orientation = opened.getexif().get(ORIENTATION, 1)
            # pHash looks at a 32x32 thumbnail: let JPEG decode at 1/2..1/8 scale, which makes
            # checking a large set several times faster. Other formats ignore the hint.
            opened.draft("RGB", (128, 128))
            opened.load()
            bits = imagehash.phash(Image.fromarray(to_rgb_array(opened))).hash.flatten()
    except ImageReadError as err:
        return Fingerprint(digest, None, error=str(err).split(": ", 1)[-1])
    except (OSError, SyntaxError, ValueError) as err:   # truncated, not an image
        return Fingerprint(digest, None, error=f"unreadable or truncated image ({err})")
    phash = int("".join("1" if b else "0" for b in bits), 2)
    return Fingerprint(digest, phash, size, orientation if orientation in range(1, 9) else 1)


# Set bits of every byte value, for counting differing hash bits on numpy < 2 (no bitwise_count).
_BYTE_BITS = np.array([bin(v).count("1") for v in range(256)], np.uint8)


def _popcount(values: np.ndarray) -> np.ndarray:
    """values: (...,) uint64 -> (...,) number of set bits."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(values)
    as_bytes = np.ascontiguousarray(values).view(np.uint8).reshape(*values.shape, 8)
    return _BYTE_BITS[as_bytes].sum(axis=-1, dtype=np.int64)


def _merge(labels: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Union of the components of a[k] and b[k] for every k; labels: (N,) each node's root (the
    smallest node of its component), kept that way."""
    while len(a):
        ra, rb = labels[a], labels[b]
        differ = ra != rb
        if not differ.any():
            break
        a, b, ra, rb = a[differ], b[differ], ra[differ], rb[differ]
        np.minimum.at(labels, np.maximum(ra, rb), np.minimum(ra, rb))
        while True:                       # pointer jumping until every node points at its root
            jumped = labels[labels]
            if np.array_equal(jumped, labels):
                break
            labels = jumped
    return labels


def near_components(hashes: np.ndarray, max_distance: int = NEAR_DISTANCE) -> np.ndarray:
    """hashes: (N,) uint64, distinct -> (N,) component label (the smallest index in the component),
    where hashes within ``max_distance`` bits of each other, directly or through others, share one.

    Work and memory are linear in N (times the size of the largest byte-pair bucket, small for
    real pictures); no pair list is ever built."""
    n = len(hashes)
    labels = np.arange(n)
    if n < 2:
        return labels
    same_bytes = 8 - max_distance           # bytes two near hashes must share (pigeonhole)
    if same_bytes < 1:
        raise ValueError(f"max_distance {max_distance} is too large for byte-pair indexing (at most 7)")
    parts = hashes.astype(np.uint64).view(np.uint8).reshape(n, 8).astype(np.int64)
    for chosen in combinations(range(8), same_bytes):
        key = np.zeros(n, np.int64)
        for byte in chosen:
            key = (key << 8) | parts[:, byte]
        order = np.argsort(key, kind="stable")
        sorted_key = key[order]
        # Compare each hash with the next ones of its bucket: ``active`` are the sorted positions whose
        # bucket still reaches ``offset`` further (a shrinking set, so the work is the bucket pairs).
        active, offset = np.arange(n - 1), 1
        while len(active):
            active = active[active + offset < n]
            active = active[sorted_key[active + offset] == sorted_key[active]]
            i, j = order[active], order[active + offset]
            unmerged = labels[i] != labels[j]
            i, j = i[unmerged], j[unmerged]
            close = _popcount(hashes[i] ^ hashes[j]) <= max_distance
            labels = _merge(labels, i[close], j[close])
            offset += 1
    return labels


def find_duplicate_groups(items: list[tuple[str, Path]], prints: list[Fingerprint]) -> list[dict]:
    """items: (split, path) per image; prints: their fingerprints -> one dict per set of two or more
    identical or look-alike images: {"kind": "exact" (same bytes) | "near", "splits": "train" or
    "train/val" (leakage), "count": n, "per_split": {split: n}, "files": [paths]}, largest first."""
    valid = [k for k, p in enumerate(prints) if p.phash is not None]
    group_of = np.full(len(items), -1, np.int64)
    if valid:
        unique, inverse = np.unique(np.array([prints[k].phash for k in valid], np.uint64), return_inverse=True)
        group_of[valid] = near_components(unique)[inverse.reshape(-1)]
    by_digest: dict[str, int] = {}
    for k, p in enumerate(prints):            # identical bytes that do not decode: one group by digest
        if p.phash is None and p.digest:
            group_of[k] = len(items) + by_digest.setdefault(p.digest, len(by_digest))
    members: dict[int, list[int]] = {}
    for k, group in enumerate(group_of.tolist()):
        if group >= 0:
            members.setdefault(group, []).append(k)
    order = list(dict.fromkeys(split for split, _ in items))
    groups = []
    for ks in members.values():
        if len(ks) < 2:
            continue
        per_split = {s: n for s in order if (n := sum(1 for k in ks if items[k][0] == s))}
        groups.append({"kind": "exact" if len({prints[k].digest for k in ks}) == 1 else "near",
                       "splits": "/".join(per_split), "count": len(ks), "per_split": per_split,
                       "files": [str(items[k][1]) for k in ks]})
    groups.sort(key=lambda g: (-g["count"], g["files"][0]))
    return groups
