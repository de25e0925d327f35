"""``rcnn eval``: a checkpoint on its validation split (or the data named), with the full report."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from rich.table import Table

from ..errors import UsageError
from ..files import write_json
from ..model.source import ENSEMBLE_SUFFIXES, WeightsSource
from ..predict.ensemble import load_ensemble
from ..predict.limits import PREDICT
from ..settings.resolve import Settings, exact_variant, resolve
from . import default_output, say, stdout, tiling_note, weights_or_default, writable
from .options import EvalOptions, shorthand


@dataclass
class EvalResult:
    report: Any                 # rcnn_cli.eval.EvalReport (None on ranks other than 0)
    out_dir: Path
    num_images: int
    cfg: DictConfig | None = None


def run(options: EvalOptions) -> EvalResult:
    if options.out:       # a folder that cannot be written is one line before the weights are read
        writable(f"--out {options.out}", options.out)
    for option, path in (("--json", options.json_path), ("--predictions", options.predictions)):
        if path:
            writable(f"{option} {path}", path.parent)
    overrides = shorthand(options.overrides, precision=options.precision, tta="true" if options.tta else None)
    settings = resolve("eval", overrides, weights=weights_or_default(options.weights), config_dir=options.config_dir)
    out = options.out or default_eval_dir(settings.weights, settings.cfg)
    if not options.out:
        writable(f"{out} (eval's default folder; or name another --out)", out)
    eval_device(settings.cfg)
    for note in settings.notes:
        say(f"note: {note}")
    predictor = load_ensemble(settings) if settings.members else None
    result = evaluate(settings, out, options.json_path, options.predictions, options.tile, options.overlap, predictor,
                      options.label_issues)
    if result.report is not None:
        print_report(result)
        if settings.cfg.model.precision != "fp32" and settings.members:
            say("note: the ensemble was scored at model.precision=" + str(settings.cfg.model.precision) +
                "; score it at fp32 (the default) for its exact figures")
        elif settings.cfg.model.precision != "fp32":
            compare_with_exact(settings, result, options.tile, options.overlap)
    return result


def eval_device(cfg: DictConfig):
    """Where eval scores, tiled or not: ``device``, which settings.resolve took from trainer.accelerator;
    a GPU asked for where there is none is one line naming the setting the user typed."""
    from ..hardware import resolve_device

    try:
        return resolve_device(cfg.device)
    except UsageError:
        raise UsageError(f"trainer.accelerator={cfg.trainer.accelerator}: this machine has no CUDA GPU; use "
                         "trainer.accelerator=cpu or auto") from None


def default_eval_dir(source: WeightsSource, cfg: DictConfig) -> Path:
    """Beside the run the weights belong to: runs/x/checkpoints/best.ckpt -> runs/x/eval, and
    folds/ensemble.yaml -> folds/eval-ensemble; anything else under runs_root (commands.default_output):
    eval-<stem>, and a,b,c -> eval-ensemble."""
    weights = Path(str(source.given))
    if source.kind == "ensemble":
        if weights.suffix.lower() in ENSEMBLE_SUFFIXES:
            return weights.parent / "eval-ensemble"
        return default_output(cfg, "eval-ensemble")
    if weights.parent.name == "checkpoints":
        return weights.parent.parent / "eval"
    return default_output(cfg, f"eval-{weights.stem}")


def evaluate(settings: Settings, out_dir: Path, json_path: Path | None = None,
             predictions_path: Path | None = None, tile: int | None = None,
             overlap: float = PREDICT.tile_overlap, predictor=None, label_issues: bool = False) -> EvalResult:
    """predictor: an ensemble's (inference/ensemble.py), scored instead of ``settings``' checkpoint."""
    report, indices, datamodule = score(settings, tile, overlap, predictor)
    if report is None:                # DDP ranks other than 0
        return EvalResult(None, out_dir, 0, settings.cfg)
    _write_outputs(report, indices, datamodule, settings.cfg, out_dir, json_path, predictions_path, label_issues)
    return EvalResult(report, out_dir, len(indices), settings.cfg)


def score(settings: Settings, tile: int | None = None, overlap: float = PREDICT.tile_overlap, predictor=None):
    """(EvalReport or None off rank 0, the validation record indices scored, the datamodule)."""
    from ..data.pipeline.datamodule import DetectionDataModule

    cfg = settings.cfg
    datamodule = DetectionDataModule(cfg)
    datamodule.setup("validate")
    stored = (settings.checkpoint[1] if settings.checkpoint else {}).get("class_names")
    if stored and list(stored) != list(datamodule.class_names):
        raise UsageError(f"{cfg.model.weights} was trained on classes {stored} but the data has "
                         f"{datamodule.class_names}; pass the matching dataset=... or dataset.class_names=")
    if not tile and cfg.dataset.tile:
        # trained on tiles: score as validation did (training/tiled_validation.py), at its tile and overlap
        tile, overlap = int(cfg.dataset.tile), float(cfg.dataset.tile_overlap)
        say(f"note: scoring in tiles of {tile} px (overlap {overlap:g}) as the model was trained (dataset.tile); "
            "dataset.tile=null scores whole pictures")
    if tile or predictor is not None or settings.cfg.model.tta:
        # what rcnn predict runs (tiles, TTA, ensembles), not the training loop's batched forward
        return (*_score_with_predictor(settings, datamodule, tile, overlap, predictor), datamodule)
    return (*_score_with_lightning(settings, datamodule), datamodule)


def compare_with_exact(settings: Settings, result: EvalResult, tile: int | None, overlap: float) -> dict[str, float]:
    """A fast path's figures beside the exact model's, so that eval's number of record stays the
    model's: the same data scored again at model.precision=fp32. -> {metric: exact value}."""
    report = score(exact_variant(settings), tile, overlap)[0]
    fast, truth = result.report.summary(), report.summary()
    for key, title in EVAL_ROWS[:3]:
        say(f"{title}: exact model {truth[key]:.4f}, at {settings.cfg.model.precision} {fast[key]:.4f} "
            f"({fast[key] - truth[key]:+.4f})")
    return {key: truth[key] for key in truth}


def _score_with_lightning(settings: Settings, datamodule):
    """The validation loop of training (DDP-aware): (EvalReport or None off rank 0, record indices)."""
    from ..model.factory import create_detector
    from ..training.module import DetectorModule
    from ..training.trainer import build_trainer

    cfg = settings.cfg
    detector = create_detector(cfg.model, checkpoint=settings.checkpoint)
    prepare_for_eval(cfg, detector.model, datamodule)
    module = DetectorModule(detector, cfg.optim, settings.checkpoint[1] if settings.checkpoint else {})
    trainer = build_trainer(cfg, None, training=False)
    trainer.validate(module, datamodule=datamodule, verbose=False)
    if trainer.global_rank != 0:
        return None, []
    return module.last_report, [index for index, _, _ in module.evaluated_all]


def _score_with_predictor(settings: Settings, datamodule, tile: int | None, overlap: float, predictor=None):
    """Each validation picture as ``rcnn predict`` runs it: in overlapping tiles (inference/tiling.py) with
    ``tile``, else whole, in batches of dataset.batch_size; with TTA (model.tta) or an ensemble's predictor."""
    from ..data.pipeline.dataset import DetectionDataset
    from ..eval import evaluate as score
    from ..inference.predictor import load_predictor
    from ..inference.tiling import detect_tiled

    cfg = settings.cfg
    if tile:
        tiling_note(tile, cfg.model)
    predictor = predictor or load_predictor(cfg, settings.checkpoint, typed=settings.typed, source=settings.weights)
    records = datamodule.records("val")
    dataset = DetectionDataset(records, max_pixels=cfg.dataset.max_image_pixels)
    predictions, targets, batch = [], [], int(cfg.dataset.batch_size)
    for start in range(0, len(dataset), batch):
        images, chunk = zip(*(dataset[index] for index in range(start, min(start + batch, len(dataset)))))
        if tile:
            found = [detect_tiled(predictor.detect, image, tile, overlap, batch, float(cfg.model.box_nms_thresh),
                                  nms_agnostic=bool(cfg.model.box_nms_agnostic)) for image in images]
        else:
            found = predictor.detect(list(images))
        predictions += [{key: value.cpu() for key, value in detection.items()} for detection in found]
        targets += chunk
    report = score(predictions, targets, datamodule.class_names, max_detections=cfg.model.box_detections_per_img)
    return report, list(range(len(records)))


def _write_outputs(report, indices: list[int], datamodule, cfg, out_dir: Path, json_path, predictions_path,
                   label_issues: bool = False) -> None:
    from ..eval import coco_results
    from ..eval.html_report import write_html_report

    summary = report.summary()
    write_json(out_dir / "metrics.json", summary)
    if json_path:
        write_json(json_path, summary)
    thresholds = report.thresholds()
    write_json(out_dir / "thresholds.json", thresholds)
    plots = report.save_plots(out_dir)
    records = datamodule.records("val")
    paths = [records[index].path for index in indices]
    sections = ()
    if label_issues:
        from .label_issues import from_detections

        sections = (from_detections(report.predictions, report.targets, report.class_names, paths, out_dir,
                                    f"{cfg.model.weights} on {cfg.dataset.name} (val)")[1],)
    write_html_report(out_dir / "report.html", report, paths, plots, thresholds,
                      title=f"rcnn eval: {cfg.model.weights} on {cfg.dataset.name}", sections=sections)
    if predictions_path:
        image_ids = [records[index].source_id for index in indices]
        category_ids = datamodule.category_ids or list(range(1, len(datamodule.class_names) + 1))
        write_json(predictions_path, coco_results(report.predictions, image_ids, category_ids))


def prepare_for_eval(cfg: DictConfig, model, datamodule) -> None:
    """Scores the model as ``model.precision`` runs it, chosen by the one rule (inference/precision.py);
    eval's default is the exact model (settings.resolve). int8 calibrates on training images
    (validation ones when there are none): the score then says what int8 costs on data the ranges
    were not fitted to. A reduced path is checked on validation images."""
    from ..data.images import read_decodable_chw
    from ..data.samples import CHECK_IMAGES, Samples, calibration_images
    from ..inference.precision import cache_key
    from ..inference.predictor import prepare_model

    device = eval_device(cfg)
    images = []
    if cfg.model.precision == "int8":
        if device.type != "cpu":
            raise UsageError("model.precision=int8 runs on the CPU; add trainer.accelerator=cpu")
        splits = {split: datamodule.records(split) for split in ("train", "val")}
        images = calibration_images(records_by_split=splits, name=cfg.dataset.name).images

    def samples() -> Samples:
        checked = read_decodable_chw([r.path for r in datamodule.records("val")[:CHECK_IMAGES]])
        return Samples(checked, f"val images of {cfg.dataset.name}" if checked else "no decodable val image")

    model_cfg = {k: v for k, v in cfg.model.items()}
    decision = prepare_model(model, cfg.model.precision, device, images, samples,
                             cache_key(cfg.model.weights, model_cfg, device.type), len(datamodule.class_names))
    if decision.runs != "fp32":
        say(decision.line())


EVAL_ROWS = (("map", "AP @[.5:.95] (COCO)"), ("map_50", "AP50"), ("map_75", "AP75"), ("map_small", "AP small"),
             ("map_medium", "AP medium"), ("map_large", "AP large"),
             ("voc07_map50", "VOC07 AP50 (11-point)"), ("voc_map50", "VOC AP50 (all points)"))


def print_report(result: EvalResult) -> None:
    summary = result.report.summary()
    stdout.print(result.report.table())
    table = Table(title=f"{result.num_images} images", title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    most = result.report.max_detections      # AR at the model's own detections per image
    rows = [*EVAL_ROWS[:6], (f"mar_{most}", f"AR@{most}"), *EVAL_ROWS[6:]]
    for key, title in rows:
        if key in summary:
            table.add_row(title, "n/a" if summary[key] < 0 else f"{summary[key]:.4f}")
    stdout.print(table)
    stdout.print(f"report.html, plots, metrics.json and thresholds.json in {result.out_dir}", highlight=False,
                 markup=False)
