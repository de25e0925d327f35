"""``rcnn data check``: counts, sizes, every data problem, duplicates, leakage, class imbalance and how
well the anchors fit the boxes, printed and as JSON."""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf
from rich.console import Console
from rich.progress import track
from rich.table import Table
from rich.text import Text

from ..data.inspection.anchor_fit import MAX_UNMATCHED, anchor_fit
from ..data.inspection.check import IMBALANCE, build_report, class_balance, draw_augmented, draw_samples
from ..data.readers.load import load_dataset
from ..files import write_json
from ..settings.resolve import resolve
from . import console, plain, printable, stdout
from .options import CheckOptions


def run(options: CheckOptions) -> int:
    """Print the report (and write it as JSON); 0 usable, 1 strict with problems. Unusable data
    raises DatasetError (exit 2)."""
    settings = resolve("check", options.overrides, weights=options.weights, config_dir=options.config_dir)
    cfg = settings.cfg
    loaded = all_splits(cfg)
    report = build_report(loaded, cfg.dataset.max_image_pixels, progress=_progress)
    # Both are about training: the split the sampler repeats and the boxes the anchors must match.
    train = loaded.splits.get("train") or [r for records in loaded.splits.values() for r in records]
    use_ignored = bool(cfg.dataset.use_difficult)
    if cfg.dataset.tile is not None:
        # Training on tiles: the sampler repeats tiles and the anchors see tile-sized pictures.
        train, report["tiles"] = training_tiles(cfg, train, use_ignored)
    unit = "tiles and whole pictures" if "tiles" in report else "images"
    report["balance"] = class_balance(train, loaded.class_names, use_ignored, unit)
    report["anchor_fit"] = anchor_fit(train, loaded.class_names, cfg.model, use_ignored)
    print_report(stdout, report)
    if options.json_path:
        write_json(options.json_path, report)
        stdout.print(plain(f"report written to {options.json_path}"), highlight=False)
    if options.show and options.augmented:
        written = draw_augmented(cfg, loaded, options.show, options.out, train if "tiles" in report else None)
        stdout.print(plain(f"{len(written)} training pictures as the model sees them (augment={cfg.augment.name}, "
                           f"min_size {cfg.model.min_size}, max_size {cfg.model.max_size}) in {options.out}"),
                     highlight=False)
    elif options.show:
        written = draw_samples(loaded, options.show, options.out, cfg.dataset.max_image_pixels)
        stdout.print(plain(f"{len(written)} pictures with boxes in {options.out}"), highlight=False)
    if options.weights:
        from .label_issues import check_labels

        check_labels(settings, loaded, options.out, _progress)
    return 1 if cfg.dataset.strict and report["problems"] else 0


def all_splits(cfg):
    """Every split of the configured data. Every problem is reported here, strict or not; strict only
    decides the exit code."""
    return load_dataset(OmegaConf.merge(cfg.dataset, {"strict": False}), ("train", "val", "test"))


def training_tiles(cfg, records: list, use_ignored: bool) -> tuple[list, dict[str, Any]]:
    """The training items ``dataset.tile`` makes (as the DataModule makes them) and their summary."""
    from ..data.pipeline.tiles import tile_records, tiling_summary

    data = cfg.dataset
    items = tile_records(records, int(data.tile), float(data.tile_overlap), float(data.tile_min_visibility),
                         float(data.tile_empty_share), seed=int(cfg.seed), use_ignored=use_ignored)
    summary = {"tile": int(data.tile), "overlap": float(data.tile_overlap), **tiling_summary(records, items)}
    return items, summary


def _progress(items, total: int, description: str):
    """A progress bar with the rate and time left, on stderr (transient: the report follows)."""
    return track(items, description=description, total=total, console=console, transient=True)


def print_report(console: Console, report: dict[str, Any]) -> None:
    """Class names, file names and values come from the data: every cell and line that holds them is
    ``plain`` text, so that ``[nan, 10.0, nan, 30.0]`` or ``x[/b]y.jpg`` print as they are."""
    splits = report["splits"]
    table = Table(title=f"{report['images']} images, {report['boxes']} boxes", title_justify="left")
    table.add_column("class")
    for split in splits:
        table.add_column(split, justify="right")
    table.add_column("all", justify="right")
    for name, total in report["classes"].items():
        table.add_row(plain(name), *[str(splits[s]["classes"][name]) for s in splits], str(total))
    table.add_row("[dim]images[/]", *[str(splits[s]["images"]) for s in splits], str(report["images"]))
    table.add_row("[dim]empty images[/]", *[str(splits[s]["empty_images"]) for s in splits],
                  str(report["empty_images"]))
    console.print(table)
    sizes, boxes = report["image_size"], report["box_sizes"]
    console.print(f"image sizes {sizes['min'][0]}x{sizes['min'][1]} to {sizes['max'][0]}x{sizes['max'][1]}; "
                  f"boxes small (<32²) {boxes['small']}, medium {boxes['medium']}, large (≥96²) {boxes['large']}",
                  highlight=False)
    if report["problems"]:
        problems = Table(title="problems found (and what was done)", title_justify="left")
        for column in ("problem", "count", "policy", "first files"):
            problems.add_column(column, overflow="fold")
        for p in report["problems"]:
            examples = Text("\n".join(printable(example) for example in p["examples"][:3]))   # one per line
            problems.add_row(p["kind"], str(p["count"]), plain(p["policy"]), examples)
        console.print(problems)
    else:
        console.print("[green]no problems found[/]")
    for key, title in (("duplicates", "group(s) of duplicate images within a split"),
                       ("leakage", "group(s) of duplicate images across splits (leakage)")):
        if report[key]:
            console.print(Text.assemble((f"{len(report[key])} {title}", "yellow"),
                                        f" ({sum(g['count'] for g in report[key])} images), e.g. ",
                                        plain("; ".join(_group_line(g) for g in report[key][:3]))), highlight=False)
    if "tiles" in report:
        t = report["tiles"]
        console.print(f"training tiles (dataset.tile={t['tile']}, tile_overlap={t['overlap']:g}): {t['cut_images']} "
                      f"of {t['images']} training images cut into {t['tiles']} tiles ({t['empty_tiles']} without "
                      f"boxes), the others whole: {t['items']} training items an epoch", highlight=False)
    if "balance" in report:
        print_balance(console, report["balance"])
    if "anchor_fit" in report:
        print_anchor_fit(console, report["anchor_fit"])
    for note in report["notes"]:
        console.print(plain(f"note: {note}"), highlight=False)


def print_balance(console: Console, balance: dict[str, Any]) -> None:
    parts = []
    for key, ratio in (("boxes", "box_ratio"), ("images", "image_ratio")):
        counts = {name: n for name, n in balance[key].items() if n}
        if counts:
            high, low = max(counts, key=counts.get), min(counts, key=counts.get)
            label = key if key == "boxes" else balance["unit"]
            parts.append(f"{label} {high} {counts[high]} / {low} {counts[low]} = {balance[ratio]:g}x")
    line = "class imbalance (train): " + "; ".join(parts)
    if balance["absent"]:
        line += f"; no training boxes for {', '.join(balance['absent'])}"
    console.print(plain(line), highlight=False)
    hint = balance["suggestion"]
    if hint:
        unit = balance["unit"]
        text = (f" try {hint['setting']} (repeat-factor sampling): an epoch of ~{hint['epoch_images']:g} {unit} "
                f"instead of {hint['train_images']}, {hint['rarest']} {unit} x{hint['rarest_repeat']:g}")
        if balance["image_ratio"] <= IMBALANCE:
            text += (f" (by {unit} the classes are only {balance['image_ratio']:g}x apart: repeating them "
                     "can rebalance them little)")
        console.print(Text.assemble(("rare classes:", "yellow"), plain(text)), highlight=False)


def print_anchor_fit(console: Console, fit: dict[str, Any]) -> None:
    shares = ", ".join(f"{name} {c['share']:.1%} of {c['boxes']}" for name, c in fit["classes"].items() if c["boxes"])
    console.print(plain(f"boxes no anchor fits (IoU < {fit['iou']:g} by shape, after resizing to min_size "
                        f"{fit['min_size']}, max_size {fit['max_size']}): {shares}"), highlight=False)
    worst = max((c["share"] for c in fit["classes"].values()), default=0.0)
    if worst > MAX_UNMATCHED:
        fixes = " or ".join(f"{' '.join(s['overrides'])} ({s['worst_share']:.1%} at worst)"
                            for s in fit["suggestions"])
        advice = f"try {fixes}" if fixes else "no scaling of anchor sizes or image size brings it under"
        console.print(Text.assemble(("anchors:", "yellow"), plain(f" more than {MAX_UNMATCHED:.0%} of a class fits "
                                                                  f"no anchor; {advice}")), highlight=False)


def _group_line(group: dict[str, Any]) -> str:
    counts = ", ".join(f"{n} {split}" for split, n in group["per_split"].items())
    shown = " = ".join(group["files"][:2]) + (f" = ... ({group['count'] - 2} more)" if group["count"] > 2 else "")
    return f"{group['kind']} x{group['count']} ({counts}): {shown}"


