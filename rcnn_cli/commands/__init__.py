"""One module per verb of the ``rcnn`` command. Each takes one options object, resolves its
settings with ``settings.resolve`` and raises ``errors.RcnnError`` for the user; ``cli.main``
prints it. Library packages never import from here."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from ..errors import UsageError

# Progress, notes and errors go to stderr; tables and YAML meant to be read or piped go to stdout.
console = Console(stderr=True)
stdout = Console()


def say(line: str) -> None:
    """A plain line on stderr. Printed as text, never parsed as Rich markup: lines carry paths, names
    and values from the user and the data (``x[/b]y.jpg``, ``[nan, 10.0]``), which markup would garble
    or turn into a MarkupError after the work is done."""
    console.print(line, markup=False, highlight=False, soft_wrap=True)


def weights_or_default(weights: Path | str | None) -> Path | str:
    """--weights as given (a file or a name such as resnet50_fpn.coco), or the default COCO weights."""
    from ..model import zoo

    if weights is None:
        say(f"no --weights: using {zoo.DEFAULT_WEIGHTS} (COCO-pretrained; see `rcnn weights list`)")
        return zoo.DEFAULT_WEIGHTS
    if zoo.is_named(str(weights)) or zoo.looks_like_a_name(str(weights)) or Path(weights).is_file():
        return str(weights)
    raise UsageError(f"--weights {weights}: no such file (named weights: {', '.join(zoo.DETECTION)})")


def tiling_note(tile: int, model) -> None:
    """Tiles exist to keep native resolution; the model would still resize each to min_size."""
    smallest = model.min_size if isinstance(model.min_size, int) else list(model.min_size)[-1]
    if smallest < tile:
        say(f"note: each {tile} px tile is resized to model.min_size={smallest} by the model; for native "
            f"resolution add model.min_size={tile} model.max_size={tile}")

