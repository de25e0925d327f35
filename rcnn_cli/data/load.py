"""``load_dataset(cfg.dataset)``: any supported format -> LoadedDataset (records + problems)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from . import coco, voc, yolo
from .errors import DatasetError
from .records import ImageRecord, LoadedDataset, ProblemLog
from .sanitize import make_record, report
from .shapes import ensure_shapes

FORMATS = ("voc", "coco", "yolo", "shapes")


def load_dataset(cfg, splits: Sequence[str] = ("train", "val")) -> LoadedDataset:
    """Read the configured splits; problems are fixed by policy and logged, not raised, unless
    ``cfg.strict``. Raises DatasetError (one line) when the data cannot be used at all."""
    fmt = cfg.get("format")
    if fmt not in FORMATS:
        raise DatasetError(f"dataset.format {fmt!r} is not one of {', '.join(FORMATS)}")
    log = ProblemLog()
    loaded = {"voc": _load_voc, "coco": _load_coco, "yolo": yolo.load_yolo, "shapes": _load_shapes}[fmt](cfg, splits, log)
    loaded.problems = log
    for split, records in loaded.splits.items():
        loaded.splits[split] = _apply_empty_policy(records, bool(cfg.get("keep_empty", True)), log)
    if not any(loaded.splits.values()):
        raise DatasetError(f"no usable images in the configured {fmt} data ({len(log)} problems; "
                           "run `rcnn data check` to see them)")
    if cfg.get("strict") and len(log):
        kinds = ", ".join(f"{kind} x{len(items)}" for kind, items in log.by_kind().items())
        raise DatasetError(f"dataset.strict=true and the data has problems: {kinds}; run `rcnn data check`")
    return loaded


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


def _paths(value) -> list[Path]:
    """One path or a list of them (``dataset.root=[VOC2007,VOC2012]``)."""
    if value is None:
        return []
    if isinstance(value, (str, Path)):
        return [Path(value)]
    return [Path(v) for v in value]


def _load_voc(cfg, splits, log: ProblemLog) -> LoadedDataset:
    if cfg.get("images") and cfg.get("annotations"):
        files = voc.flat_files(Path(cfg.images), Path(cfg.annotations), log)
        train, val = voc.seeded_split(files, float(cfg.val_fraction), int(cfg.split_seed))
        by_split = {"train": train, "val": val}
    else:
        roots = _paths(cfg.get("root"))
        if not roots:
            raise DatasetError("dataset=voc needs dataset.root=<VOCdevkit/VOC2007> (a list for 07+12) "
                               "or dataset.images=DIR dataset.annotations=DIR")
        for root in roots:
            if not root.is_dir():
                raise DatasetError(f"dataset.root {root}: folder not found")
        names = {"train": cfg.get("train_split"), "val": cfg.get("val_split"), "test": cfg.get("test_split")}
        by_split = {s: voc.devkit_files(roots, names[s], log) for s in splits if names.get(s)}
    class_names = list(cfg.class_names) if cfg.get("class_names") else sorted(
        {n for files in by_split.values() for f in files for n in f.names if n})
    label_of = {name: i + 1 for i, name in enumerate(class_names)}
    records = {split: _voc_records(files, label_of, log) for split, files in by_split.items()}
    return LoadedDataset(class_names, records)


def _voc_records(files: list[voc.VocFile], label_of: dict[str, int], log: ProblemLog) -> list[ImageRecord]:
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
                             parsed.xml.stem, parsed.xml)
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
                                                    list(cfg.class_names) if cfg.get("class_names") else None,
                                                    log, notes)
    records = {split: coco.coco_records(parsed, category_ids, log) for split, parsed in files.items()}
    return LoadedDataset(class_names, records, category_ids=category_ids, notes=notes)


def _load_shapes(cfg, splits, log: ProblemLog) -> LoadedDataset:
    sources = ensure_shapes(cfg.root, int(cfg.num_images), int(cfg.image_size), int(cfg.seed))
    return _load_coco(cfg, splits, log, sources)
