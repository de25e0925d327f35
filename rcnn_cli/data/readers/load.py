"""``load_dataset(cfg.dataset)``: any supported format -> LoadedDataset (records + problems)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import DatasetError
from ..folds import apply_fold
from ..records import ImageRecord, LoadedDataset, ProblemLog
from . import coco, voc, yolo
from .sanitize import make_record, report
from .shapes import ensure_shapes

FORMATS = ("voc", "coco", "yolo", "shapes")


def load_dataset(cfg, splits: Sequence[str] = ("train", "val")) -> LoadedDataset:
    """Read the configured splits; problems are fixed by policy and logged, not raised, unless
    ``cfg.strict``. Raises DatasetError (one line) when the data cannot be used at all."""
    fmt = cfg.format
    if fmt not in FORMATS:
        raise DatasetError(f"dataset.format {fmt!r} is not one of {', '.join(FORMATS)}")
    log = ProblemLog()
    read = {"voc": _load_voc, "coco": _load_coco, "yolo": yolo.load_yolo, "shapes": _load_shapes}[fmt]
    # Data without a validation split of its own gets one held out of train, by one rule for
    # every format; train is then read even when only val was asked for. A cross-validation fold
    # (dataset.fold, data/folds.py) validates on a part of train instead.
    fold = cfg.fold if cfg.folds else None
    hold_out = "val" in splits and fold is None and not _has_own_val(cfg, fmt)
    loaded = read(cfg, tuple(dict.fromkeys([*splits, "train"])) if hold_out or fold else splits, log)
    loaded.problems = log
    if fold is not None:
        loaded.notes.append(apply_fold(loaded.splits, int(cfg.folds), int(fold), int(cfg.split_seed),
                                       cfg.max_image_pixels))
        loaded.splits = {split: records for split, records in loaded.splits.items() if split in splits}
    elif hold_out:
        _hold_out_val(loaded, cfg)
        loaded.splits = {split: records for split, records in loaded.splits.items() if split in splits}
    for split, records in loaded.splits.items():
        loaded.splits[split] = _apply_empty_policy(records, bool(cfg.keep_empty), log)
    if not any(loaded.splits.values()):
        raise DatasetError(f"no usable images in the configured {fmt} data ({len(log)} problems; "
                           "run `rcnn data check` to see them)")
    if cfg.strict and len(log):
        kinds = ", ".join(f"{kind} x{len(items)}" for kind, items in log.by_kind().items())
        raise DatasetError(f"dataset.strict=true and the data has problems: {kinds}; run `rcnn data check`")
    return loaded


def require_training_boxes(loaded: LoadedDataset) -> None:
    """Training on a split whose every box was dropped runs to mAP 0 and looks like a model problem:
    refuse it, naming the problems that dropped the boxes."""
    records = loaded.splits.get("train") or []
    if any(record.num_boxes for record in records):
        return
    kinds = ", ".join(f"{kind} x{len(items)}" for kind, items in loaded.problems.by_kind().items()) or "none"
    raise DatasetError(f"the training split has no boxes left ({len(records)} images; problems: {kinds}); "
                       "nothing to learn from: run `rcnn data check` to see why they were dropped")


def _apply_empty_policy(records: list[ImageRecord], keep_empty: bool, log: ProblemLog) -> list[ImageRecord]:
    if keep_empty:
        return records
    kept = []
    for record in records:
        if record.num_boxes:
            kept.append(record)
        else:
            report(log, "empty_image_dropped", record.path)
    return kept


def _has_own_val(cfg, fmt: str) -> bool:
    """Whether the configured data has a validation split, judged from the config and folder
    names only (reading the images is what the readers do)."""
    if fmt == "voc":
        return not (cfg.images and cfg.annotations) and bool(cfg.val_split)
    if fmt == "coco":
        return "val" in coco.coco_sources(cfg)
    if fmt == "yolo":
        root = Path(cfg.root) if cfg.root else None
        if root is None or not (root / "data.yaml").is_file():
            return False          # the reader says what is missing
        return yolo.split_images_dir(root, yolo.read_data_yaml(root), "val") is not None
    return True                   # shapes writes its own


def _hold_out_val(loaded: LoadedDataset, cfg) -> None:
    """Split ``dataset.val_fraction`` of train off as val, by a fixed shuffle (``dataset.split_seed``),
    and say so in a note: without val, training reports no mAP and keeps no best checkpoint."""
    train = loaded.splits.get("train")
    if train is None:             # e.g. a COCO test file alone: nothing to split
        return
    fraction, seed = float(cfg.val_fraction), int(cfg.split_seed)
    loaded.splits["train"], loaded.splits["val"] = seeded_split(train, fraction, seed)
    held = len(loaded.splits["val"])
    loaded.notes.append(f"the data has no validation split: held out {held} of {len(train)} training images "
                        f"as val (dataset.val_fraction={fraction:g}, dataset.split_seed={seed})")


def seeded_split(items: list, val_fraction: float, seed: int) -> tuple[list, list]:
    """(train, val): a fixed shuffle of ``items`` by ``seed``; the same data always splits the same."""
    order = np.random.default_rng(seed).permutation(len(items))
    num_val = int(round(len(items) * val_fraction))
    val = set(order[:num_val].tolist())
    return [x for i, x in enumerate(items) if i not in val], [x for i, x in enumerate(items) if i in val]


def _paths(value) -> list[Path]:
    """One path or a list of them (``dataset.root=[VOC2007,VOC2012]``)."""
    if value is None:
        return []
    if isinstance(value, (str, Path)):
        return [Path(value)]
    return [Path(v) for v in value]


def _load_voc(cfg, splits, log: ProblemLog) -> LoadedDataset:
    if cfg.images and cfg.annotations:
        by_split = {"train": voc.flat_files(Path(cfg.images), Path(cfg.annotations), log)}   # val: held out
    else:
        roots = _paths(cfg.root)
        if not roots:
            raise DatasetError("dataset=voc needs dataset.root=<VOCdevkit/VOC2007> (a list for 07+12) "
                               "or dataset.images=DIR dataset.annotations=DIR")
        for root in roots:
            if not root.is_dir():
                raise DatasetError(f"dataset.root {root}: folder not found")
        names = {"train": cfg.train_split, "val": cfg.val_split, "test": cfg.test_split}
        by_split = {s: voc.devkit_files(roots, names[s], log) for s in splits if names.get(s)}
    class_names = list(cfg.class_names) if cfg.class_names else sorted(
        {n for files in by_split.values() for f in files for n in f.names if n})
    label_of = {name: i + 1 for i, name in enumerate(class_names)}
    limit = cfg.max_image_pixels
    records = {split: _voc_records(files, label_of, log, limit) for split, files in by_split.items()}
    return LoadedDataset(class_names, records)


def _voc_records(files: list[voc.VocFile], label_of: dict[str, int], log: ProblemLog, max_pixels: int | None = None
                 ) -> list[ImageRecord]:
    records = []
    for parsed in files:
        if parsed.image is None:
            continue
        keep = [i for i, name in enumerate(parsed.names) if name in label_of]
        for i in set(range(len(parsed.names))) - set(keep):
            report(log, "unknown_label", parsed.xml, f"object {i}: {parsed.names[i]!r}")
        boxes = np.array([parsed.boxes[i] for i in keep], np.float32).reshape(-1, 4)
        labels = np.array([label_of[parsed.names[i]] for i in keep], np.int64)
        ignore = np.array([parsed.difficult[i] for i in keep], bool)
        record = make_record(parsed.image, parsed.declared_size, boxes, labels, ignore, log,
                             parsed.xml.stem, parsed.xml, max_pixels)
        if record is not None:
            records.append(record)
    return records


def _load_coco(cfg, splits, log: ProblemLog, sources=None) -> LoadedDataset:
    sources = sources or coco.coco_sources(cfg)
    files = {split: coco.parse_coco(json_path, images, log) for split, (json_path, images) in sources.items()
             if split in splits}
    if not files:
        raise DatasetError(f"the COCO data has none of the splits {list(splits)} (found {sorted(sources)})")
    notes: list[str] = []
    class_names, category_ids = coco.category_table(list(files.values()),
                                                    list(cfg.class_names) if cfg.class_names else None,
                                                    log, notes)
    limit = cfg.max_image_pixels
    records = {split: coco.coco_records(parsed, category_ids, log, limit) for split, parsed in files.items()}
    return LoadedDataset(class_names, records, category_ids=category_ids, notes=notes)


def _load_shapes(cfg, splits, log: ProblemLog) -> LoadedDataset:
    sources = ensure_shapes(cfg.root, int(cfg.num_images), int(cfg.image_size), int(cfg.seed))
    return _load_coco(cfg, splits, log, sources)
