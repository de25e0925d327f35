"""What ``rcnn ... --help`` prints is read by people: the docstrings' reStructuredText markup must not show."""

from __future__ import annotations

import click
import typer.main
from typer.testing import CliRunner

from rcnn_cli.cli import app


def every_command(command: click.Command, words: tuple[str, ...] = ()):
    yield words
    for name, sub in getattr(command, "commands", {}).items():
        yield from every_command(sub, (*words, name))


def test_no_help_page_shows_double_backticks():
    pages = {" ".join(words): CliRunner().invoke(app, [*words, "--help"], prog_name="rcnn", env={"COLUMNS": "200"})
             for words in every_command(typer.main.get_command(app))}
    assert len(pages) > 10 and all(page.exit_code == 0 for page in pages.values())
    shown = [f"rcnn {words}: {line.strip()}" for words, page in pages.items() for line in page.output.splitlines()
             if "``" in line]
    assert not shown, "\n".join(shown)
