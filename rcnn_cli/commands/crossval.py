"""``rcnn train --folds K`` (the same as ``dataset.folds=K``): K-fold cross-validation. The training
split is cut into K folds with duplicate pictures kept in one (data/folds.py); fold k is an ordinary
``rcnn train`` run with ``dataset.fold=k`` typed last, in ``<run folder>/fold-k``, so the settings
rule applies to it as to any run and its checkpoint carries its fold (``rcnn eval`` scores the fold
it was validated on). Then: mean ± std of every metric over the folds, one row per fold, written to
``crossval.json``, and ``ensemble.yaml`` naming the K best checkpoints (paths relative to it).

Running the same command again with ``run_dir=<that folder>`` continues it: a fold with ``fold.json``
(written once its run finished) is kept as it is, a fold with a ``last.ckpt`` resumes from it
(``resume=``), the others train."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from rich.markup import escape
from rich.table import Table

from ..errors import UsageError
from ..files import numbered_folder, write_json
from ..settings.resolve import resolve
from . import console, say, stdout

FOLD_DONE = "fold.json"          # written when a fold's run has finished: the fold is not trained again
PLAN = "folds.json"              # which pictures each fold validates on
SUMMARY = "crossval.json"
ENSEMBLE = "ensemble.yaml"


@dataclass
class FoldResult:
    fold: int
    run_dir: Path
    best_checkpoint: Path | None
    metrics: dict[str, float]
    how: str                     # "trained", "resumed" or "kept" (finished before)


@dataclass
class CrossValResult:
    run_dir: Path
    folds: list[FoldResult]
    summary: dict[str, dict[str, float | None]]      # metric -> {"mean", "std", "folds"}
    ensemble: Path | None
    notes: list[str] = field(default_factory=list)


def run(options) -> CrossValResult | list:
    """``rcnn train``: the cross-validation when dataset.folds is set (``--folds K`` sets it) and no
    dataset.fold is named, else ``train.run`` (one run, or a sweep)."""
    from . import train

    overrides = list(options.overrides) + ([f"dataset.folds={options.folds}"] if options.folds is not None else [])
    if not options.multirun and wants_folds(resolve("train", overrides, config_dir=options.config_dir).cfg):
        return cross_validate(overrides, options.config_dir)
    return train.run(train.TrainOptions(overrides=overrides, config_dir=options.config_dir, multirun=options.multirun))


def wants_folds(cfg: DictConfig) -> bool:
    """dataset.folds set and no single fold named: the whole cross-validation."""
    return cfg.dataset.folds is not None and cfg.dataset.fold is None


def cross_validate(overrides: list[str], config_dir: Path | None = None, callbacks=()) -> CrossValResult:
    """Every fold of ``dataset.folds`` (in ``overrides``), each resumed or kept as its folder says.
    callbacks: added to each fold's training (as ``train.train`` takes them)."""
    from .train import train

    settings = resolve("train", overrides, config_dir=config_dir)
    cfg = settings.cfg
    if not wants_folds(cfg):
        raise UsageError("a cross-validation needs dataset.folds=K (--folds K) and no dataset.fold")
    if cfg.resume:
        raise UsageError("resume= continues one run; to continue a cross-validation, run the same command with "
                         "run_dir=<its folder> (finished folds are kept, the others resume from their last.ckpt)")
    folds = int(cfg.dataset.folds)
    parent = Path(cfg.run_dir) if cfg.run_dir else numbered_folder(
        Path(cfg.runs_root) / f"{cfg.name or f'{cfg.dataset.name}-{cfg.model.name}'}-{folds}fold")
    plan = _claim(parent, _fold_plan(cfg), folds)
    say(f"cross-validation: {folds} folds of {', '.join(str(len(p)) for p in plan['parts'])} training images "
        f"({len(plan['groups'])} group(s) of duplicate pictures kept in one fold) in {parent}; to continue after "
        f"a stop, run the same command with run_dir={parent}")
    results = []
    for fold in range(1, folds + 1):
        console.rule(f"fold {fold} of {folds}")
        results.append(_run_fold(train, overrides, config_dir, parent, folds, fold, list(callbacks)))
    summary = summarise([r.metrics for r in results])
    ensemble = write_ensemble(parent, results)
    write_json(parent / SUMMARY, {"folds": [{"fold": r.fold, "run_dir": r.run_dir.name, "how": r.how,
                                             "best_checkpoint": _relative(r.best_checkpoint, parent),
                                             "metrics": r.metrics} for r in results],
                                  "summary": summary, "std": "sample standard deviation (n - 1)"})
    result = CrossValResult(parent, results, summary, ensemble, settings.notes)
    print_table(result)
    return result


def _fold_plan(cfg: DictConfig) -> dict[str, Any]:
    """The folds of the training split as file lists (refuses K < 2 or K above the images, in one line)."""
    from ..data.folds import fold_plan
    from ..data.readers.load import load_dataset

    train = load_dataset(cfg.dataset, ("train",)).splits.get("train") or []
    plan = fold_plan(train, int(cfg.dataset.folds), int(cfg.dataset.split_seed), cfg.dataset.max_image_pixels)
    settings = OmegaConf.to_container(cfg, resolve=True)
    settings.pop("run_dir", None)          # typed to continue a run whose folder was numbered for it
    return {"folds": int(cfg.dataset.folds), "split_seed": int(cfg.dataset.split_seed),
            "parts": [[str(train[i].path) for i in part] for part in plan.parts],
            "groups": [[str(train[i].path) for i in group] for group in plan.groups], "config": settings}


def _claim(parent: Path, plan: dict[str, Any], folds: int) -> dict[str, Any]:
    """Writes folds.json in a new folder; in one that has it, goes on only if it holds the same folds."""
    written = parent / PLAN
    if written.is_file():
        before = json.loads(written.read_text())
        if before.get("parts") != plan["parts"]:
            raise UsageError(f"run_dir={parent} holds a cross-validation with other folds ({before.get('folds')} "
                             f"folds, dataset.split_seed={before.get('split_seed')}, or other data); to continue it "
                             "run the command that started it, or name another run_dir")
        changed = _differences(before.get("config") or {}, plan["config"])
        if changed:
            raise UsageError(f"run_dir={parent} was started with other settings ({'; '.join(changed[:3])}); "
                             "continue it with the settings it was started with, or name another run_dir")
        say(f"continuing the cross-validation in {parent}")
    elif parent.is_dir() and any(parent.iterdir()):
        raise UsageError(f"run_dir={parent} already holds files but no {PLAN}: not a cross-validation folder; "
                         "name a new or empty run_dir")
    else:
        write_json(written, plan)
    return plan


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """``key: old -> new`` for every setting that differs (a fold trained one way and the next another
    would not be one cross-validation)."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [line for key in dict.fromkeys([*old, *new])
                for line in _differences(old.get(key), new.get(key), f"{prefix}{key}.")]
    return [] if old == new else [f"{prefix.rstrip('.')}: {old!r} -> {new!r}"]


def _run_fold(train, overrides: list[str], config_dir, parent: Path, folds: int, fold: int, callbacks) -> FoldResult:
    folder = parent / f"fold-{fold}"
    done = folder / FOLD_DONE
    if done.is_file():
        stored = json.loads(done.read_text())
        say(f"fold {fold}: finished before ({done}), kept")
        best = stored.get("best_checkpoint")
        return FoldResult(fold, folder, folder / best if best else None, stored["metrics"], "kept")
    last = folder / "checkpoints" / "last.ckpt"
    typed = [*overrides, f"dataset.folds={folds}", f"dataset.fold={fold}", f"run_dir={folder}"]
    how = "trained"
    if last.is_file():
        typed.append(f"resume={last}")
        how = "resumed"
        say(f"fold {fold}: resuming from {last}")
    settings = resolve("train", typed, config_dir=config_dir)
    result = train(settings, callbacks=callbacks)
    write_json(done, {"fold": fold, "metrics": result.metrics,
                      "best_checkpoint": _relative(result.best_checkpoint, folder)})
    return FoldResult(fold, folder, result.best_checkpoint, result.metrics, how)


def _relative(path: Path | None, start: Path) -> str | None:
    if path is None:
        return None
    return Path(path).resolve().relative_to(start.resolve()).as_posix()


def summarise(metrics: list[dict[str, float]]) -> dict[str, dict[str, float | None]]:
    """metric -> {"mean", "std" (sample, n - 1; None for one value), "folds" (how many had it)} over the
    folds that report it; a negative value is COCO's "undefined" (e.g. AP large without large boxes) and
    counts nowhere."""
    names = list(dict.fromkeys(name for row in metrics for name in row))
    out: dict[str, dict[str, float | None]] = {}
    for name in names:
        values = [float(row[name]) for row in metrics if name in row and math.isfinite(row[name]) and row[name] >= 0]
        if not values:
            out[name] = {"mean": None, "std": None, "folds": 0}
            continue
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else None
        out[name] = {"mean": mean, "std": std, "folds": len(values)}
    return out


def write_ensemble(parent: Path, results: list[FoldResult]) -> Path | None:
    """ensemble.yaml: the folds' best checkpoints, for ``--weights`` (inference/ensemble.py writes and reads
    the format: paths relative to the file, so the folder moves whole)."""
    from ..inference.ensemble import write_ensemble as write

    paths = [r.best_checkpoint for r in results if r.best_checkpoint is not None]
    if not paths:
        say("note: no fold kept a best.ckpt; no ensemble.yaml written")
        return None
    return write(parent / ENSEMBLE, paths)


def shown_metrics(summary: dict[str, Any]) -> list[str]:
    """The validation metrics, mAP first, in the order training logged them."""
    names = [name for name in summary if name.startswith("val/")]
    first = [n for n in ("val/map", "val/map_50", "val/map_75", "val/voc07_map50", "val/voc_map50") if n in names]
    return first + [n for n in names if n not in first]


def print_table(result: CrossValResult) -> None:
    """One row per fold, then the mean and the sample standard deviation over the folds."""
    names = shown_metrics(result.summary)
    table = Table(title=f"cross-validation: {len(result.folds)} folds, mean ± sample std", title_justify="left")
    table.add_column("fold")
    for name in names:
        table.add_column(name.split("/", 1)[1], justify="right")
    table.add_column("run")
    for r in result.folds:
        table.add_row(str(r.fold), *[_cell(r.metrics.get(n)) for n in names], escape(f"{r.run_dir.name} ({r.how})"))
    table.add_row("mean", *[_cell(result.summary[n]["mean"]) for n in names], "", style="bold")
    table.add_row("± std", *[_cell(result.summary[n]["std"]) for n in names], "", style="bold")
    stdout.print(table)
    stdout.print(f"{result.run_dir / SUMMARY}; ensemble of the fold models: "
                 f"{result.ensemble if result.ensemble else '(none)'}", markup=False, highlight=False)


def _cell(value) -> str:
    return "n/a" if value is None or value < 0 else f"{value:.4f}"
