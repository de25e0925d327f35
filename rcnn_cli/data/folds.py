"""K-fold cross-validation splits (``dataset.folds``, ``dataset.fold``): the training split cut into
K parts of about equal size, with every set of identical or look-alike pictures (the groups
``rcnn data check`` reports) kept in one part, so that no fold validates on a copy of a picture it
trained on. Fold k (1..K) validates on part k and trains on the others.

The parts follow from the data and ``dataset.split_seed`` alone, so every command that loads a fold
run's checkpoint (``rcnn eval``, ``rcnn train resume=``) gets the same images back."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DatasetError
from .records import ImageRecord


@dataclass
class FoldPlan:
    """parts[k]: the record positions of fold k + 1; groups: the positions of each duplicate set of
    two or more pictures (each set lies in one part)."""

    parts: list[list[int]]
    groups: list[list[int]]

    def split(self, records: list, fold: int) -> tuple[list, list]:
        """(train, val) of fold ``fold`` (1-based), each in the records' own order."""
        held = set(self.parts[fold - 1])
        return ([r for i, r in enumerate(records) if i not in held],
                [r for i, r in enumerate(records) if i in held])


def duplicate_sets(paths: list[Path], max_pixels: int | None = None) -> list[list[int]]:
    """Positions of ``paths`` that are the same picture or look alike, as ``rcnn data check`` finds
    them (data/inspection/duplicates.py: same bytes, or perceptual hashes within NEAR_DISTANCE bits),
    one list per set of two or more; a path listed twice is one set."""
    from .inspection.duplicates import find_duplicate_groups, fingerprint

    prints = [fingerprint(Path(p), max_pixels) for p in paths]
    # find_duplicate_groups names files; a tag per position tells apart two records of one file
    tagged = [(str(k), Path(p)) for k, p in enumerate(paths)]
    groups = find_duplicate_groups(tagged, prints)
    position = {str(path): [] for path in paths}
    for k, path in enumerate(paths):
        position[str(path)].append(k)
    sets: list[set[int]] = [set() for _ in groups]
    for found, group in zip(sets, groups):
        for name in group["files"]:
            found.update(position[name])
    for same_file in (ks for ks in position.values() if len(ks) > 1):
        sets.append(set(same_file))
    return [sorted(s) for s in _merged(sets)]


def _merged(sets: list[set[int]]) -> list[set[int]]:
    """Overlapping sets joined (a file listed twice that also has a look-alike)."""
    merged: list[set[int]] = []
    for current in sets:
        for other in [m for m in merged if m & current]:
            current |= other
            merged.remove(other)
        merged.append(current)
    return merged


def plan_folds(count: int, folds: int, seed: int, groups: list[list[int]] = ()) -> FoldPlan:
    """Parts for ``count`` items with ``groups`` kept whole: the groups (and single items) largest first,
    ties in an order shuffled by ``seed``, each into the part with fewest items so far (lowest first on a
    tie). Refuses, in one line, fewer than 2 folds or more folds than there are units to spread."""
    in_group = {k for group in groups for k in group}
    units = [list(group) for group in groups] + [[k] for k in range(count) if k not in in_group]
    if folds < 2:
        raise DatasetError(f"dataset.folds={folds}: cross-validation needs at least 2 folds")
    if folds > len(units):
        counted = f" ({len(units)} with each set of duplicates counted once)" if len(units) < count else ""
        raise DatasetError(f"dataset.folds={folds}: more folds than the {count} training images{counted} can fill; "
                           + (f"use at most dataset.folds={len(units)}" if len(units) >= 2
                              else "cross-validation needs at least 2 different pictures"))
    place = np.argsort(np.random.default_rng(seed).permutation(len(units)))   # each unit's place in a shuffle
    order = sorted(range(len(units)), key=lambda u: (-len(units[u]), int(place[u])))
    parts: list[list[int]] = [[] for _ in range(folds)]
    for unit in order:
        smallest = min(range(folds), key=lambda k: len(parts[k]))
        parts[smallest].extend(units[unit])
    return FoldPlan([sorted(part) for part in parts], [sorted(group) for group in groups])


def fold_plan(records: list[ImageRecord], folds: int, seed: int, max_pixels: int | None = None) -> FoldPlan:
    """The plan of ``dataset.folds`` for these training records (reads every picture once, for its hash)."""
    if folds > len(records):      # before hashing anything: the count alone says no
        plan_folds(len(records), folds, seed)
    return plan_folds(len(records), folds, seed, duplicate_sets([r.path for r in records], max_pixels))


def apply_fold(splits: dict[str, list], folds: int, fold: int | None, seed: int,
               max_pixels: int | None = None) -> str:
    """Replaces ``splits``' train and val by fold ``fold`` of the training split (the data's own val
    split is set aside: cross-validation scores on the training data) and returns the note to print.
    fold=None leaves the splits as they are and only checks that the folds can be made."""
    train = splits.get("train") or []
    plan = fold_plan(train, folds, seed, max_pixels)
    if fold is None:
        return f"{len(train)} training images fit {folds} folds of {_sizes(plan)} images"
    if not 1 <= fold <= folds:
        raise DatasetError(f"dataset.fold={fold}: must be in 1..{folds} (dataset.folds={folds})")
    splits["train"], splits["val"] = plan.split(train, fold)
    return (f"fold {fold} of {folds}: validating on {len(splits['val'])} of the {len(train)} training images, "
            f"training on the other {len(splits['train'])} (dataset.split_seed={seed}; "
            f"{len(plan.groups)} duplicate group(s) kept in one fold)")


def _sizes(plan: FoldPlan) -> str:
    sizes = sorted({len(part) for part in plan.parts})
    return str(sizes[0]) if len(sizes) == 1 else f"{sizes[0]}-{sizes[-1]}"
