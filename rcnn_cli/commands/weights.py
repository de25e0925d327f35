"""``rcnn weights list`` and ``rcnn weights fetch``: the named pretrained weights and the cache."""

from __future__ import annotations

from rich.table import Table

from ..model import zoo
from . import say, stdout


def every_named() -> list[zoo.NamedWeights]:
    imagenet = list({w.name: w for w in zoo.IMAGENET.values()}.values())
    return [*zoo.DETECTION.values(), *imagenet]


def list_weights() -> None:
    table = Table(title=f"named weights (cache: {zoo.cache_dir()})", title_justify="left")
    for column in ("name", "kind", "MB", "box AP", "cached"):
        table.add_column(column, justify="right" if column in ("MB", "box AP") else "left", no_wrap=True)
    for named in every_named():
        kind = "COCO detector" if named.name in zoo.DETECTION else "ImageNet backbone"
        ap = f"{named.box_ap:.1f}" if named.box_ap is not None else "-"
        cached = "yes" if named.path.is_file() else "no"
        table.add_row(named.name, kind, f"{named.size_mb:.0f}", ap, cached)
    stdout.print(table)
    stdout.print(f"default for rcnn predict/export without --weights: {zoo.DEFAULT_WEIGHTS}; ImageNet backbones: "
                 "model.backbone_weights=imagenet; box AP: torchvision's published COCO val2017 figures "
                 "(https://pytorch.org/vision/stable/models.html#object-detection)", highlight=False)


def fetch(names: list[str]) -> None:
    wanted = every_named() if names == ["all"] else [zoo.named_weights(name) for name in names]
    for named in wanted:
        cached = named.path.is_file()
        path = zoo.ensure_cached(named, progress=True)
        say(f"{named.name}: {'already in' if cached else 'fetched to'} {path}")
