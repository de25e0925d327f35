"""One module per verb of the ``rcnn`` command. Each takes one options object, resolves its
settings with ``settings.resolve`` and raises ``errors.RcnnError`` for the user; ``cli.main``
prints it. Library packages never import from here."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.text import Text

from ..errors import UsageError
from ..files import check_writable


def text_console(**options) -> Console:
    """Every console of the commands: ``:smile:`` in a file name stays as written (Rich's emoji codes are
    off). Text from the user or the data reaches a console only as ``plain(...)``, never inside markup."""
    return Console(emoji=False, **options)


# Progress, notes and errors go to stderr; tables and YAML meant to be read or piped go to stdout.
console = text_console(stderr=True)
stdout = text_console()


def printable(text: str) -> str:
    """``text`` as it is, except the characters that would break the line, move the cursor, ring, colour
    the terminal or not show at all (newline, carriage return, tab, ESC, a zero-width space, an
    undecodable byte of a file name): those as their Python escapes (``\\n``, ``\\x1b``, ``\\udcff``).
    Rich would print a newline as a second line and silently drop a carriage return, and a lone
    surrogate cannot be encoded at all."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def plain(text: str, style: str = "") -> Text:
    """User or data text for a console: printable, never parsed as markup (``x[/b]y.jpg``, a name ending
    in a backslash, which Rich's ``escape`` doubles)."""
    return Text(printable(text), style=style)


def say(line: str) -> None:
    """A plain line on stderr. Lines carry paths, names and values from the user and the data
    (``x[/b]y.jpg``, ``[nan, 10.0]``), which markup would garble or turn into a MarkupError after the
    work is done."""
    console.print(plain(line), highlight=False, soft_wrap=True)


def default_output(cfg, name: str) -> Path:
    """Where a command writes when the user names no place (--out, run_dir=): ``runs_root/name``. The one
    rule for every command's default folder (a training run, a study, predict's results, eval's report, data
    check's pictures), so that ``runs_root=elsewhere`` moves all of them. cfg: the resolved settings."""
    return Path(cfg.runs_root) / name


def writable(what: str, folder: Path) -> None:
    """An output folder that cannot be written (read-only, not permitted, a full disk) is one line now, not
    an error after the work that would fill it. what: how the user named the output (``--out runs/x``)."""
    try:
        check_writable(folder)
    except OSError as err:
        raise cannot_write_there(what, err) from None


def cannot_write_there(what: str, err: OSError) -> UsageError:
    return UsageError(f"{what}: cannot write there ({err.strerror or err})")


def weights_or_default(weights: Path | str | None) -> Path | str:
    """--weights as given (a file or a name such as resnet50_fpn.coco; what it is, settings.resolve
    decides), or the default COCO weights."""
    from ..model import zoo

    if weights is None:
        say(f"no --weights: using {zoo.DEFAULT_WEIGHTS} (COCO-pretrained; see `rcnn weights list`)")
        return zoo.DEFAULT_WEIGHTS
    return str(weights)


def tiling_note(tile: int, model) -> None:
    """Tiles exist to keep native resolution; the model would still resize each to min_size."""
    smallest = model.min_size if isinstance(model.min_size, int) else list(model.min_size)[-1]
    if smallest < tile:
        say(f"note: each {tile} px tile is resized to model.min_size={smallest} by the model; for native "
            f"resolution add model.min_size={tile} model.max_size={tile}")

