"""One module per verb of the ``rcnn`` command. Each takes one options object, resolves its
settings with ``settings.resolve`` and raises ``errors.RcnnError`` for the user; ``cli.main``
prints it. Library packages never import from here."""

from __future__ import annotations

from rich.console import Console

# Progress, notes and errors go to stderr; tables and YAML meant to be read or piped go to stdout.
console = Console(stderr=True)
stdout = Console()


def say(line: str) -> None:
    console.print(line, highlight=False, soft_wrap=True)
