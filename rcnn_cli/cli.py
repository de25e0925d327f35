"""The ``rcnn`` command: one verb per job, Hydra-style ``key=value`` overrides after it.

Commands import their machinery lazily so that ``rcnn --help`` stays instant.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from .config import ConfigError, load_config

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Train, evaluate, run and export Faster R-CNN detectors.")
data_app = typer.Typer(no_args_is_help=True, help="Inspect datasets.")
config_app = typer.Typer(no_args_is_help=True, help="Show the resolved configuration.")
app.add_typer(data_app, name="data")
app.add_typer(config_app, name="config")

console = Console(stderr=True)
Overrides = Annotated[Optional[list[str]], typer.Argument(help="key=value config overrides")]
ConfigDir = Annotated[Optional[Path], typer.Option("--config-dir", help="extra config folder")]


def fail(message: str, code: int = 2) -> None:
    """One line for the user, then exit (2: usage or config error, 1: the job failed)."""
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def compose(overrides: list[str] | None, config_dir: Path | None = None):
    try:
        return load_config(overrides or [], config_dir)
    except ConfigError as err:
        fail(str(err))


@config_app.command("show")
def config_show(overrides: Overrides = None, config_dir: ConfigDir = None) -> None:
    """Print the resolved config (after overrides) as YAML."""
    from omegaconf import OmegaConf

    typer.echo(OmegaConf.to_yaml(compose(overrides, config_dir)))


@data_app.command("check")
def data_check(
    overrides: Overrides = None,
    config_dir: ConfigDir = None,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="write the report as JSON")] = None,
    show: Annotated[int, typer.Option("--show", help="draw N images with their boxes")] = 0,
    out: Annotated[Path, typer.Option("--out", help="folder for --show pictures")] = Path("runs/data-check"),
) -> None:
    """Load the configured splits and report counts, sizes, duplicates and every problem found."""
    from .data.check import run_check

    raise typer.Exit(run_check(compose(overrides, config_dir), json_path=json_path, show=show, out=out))


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
