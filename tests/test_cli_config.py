"""The `rcnn` command's config handling: composition, --config-dir, one-line errors, exit 2."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

RCNN = [sys.executable, "-m", "rcnn_cli.cli"]


def rcnn(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([*RCNN, *args], capture_output=True, text=True, cwd=cwd)


# What `rcnn --help` promises, written here (not read from the app under test).
COMMANDS = {"train", "tune", "eval", "predict", "serve", "export", "benchmark", "data", "config", "weights"}
SUBCOMMANDS = {"data": {"check"}, "config": {"show"}, "weights": {"list", "fetch"}}


def help_of(*command: str) -> str:
    from typer.testing import CliRunner

    from rcnn_cli.cli import app

    result = CliRunner().invoke(app, [*command, "--help"], prog_name="rcnn", env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return result.output


def listed_commands(*group: str) -> dict[str, str]:
    """{command: its one-line summary} from the Commands panel of ``rcnn [group] --help``; a command
    listed without a summary does not match, so it counts as missing."""
    panel = help_of(*group).split("─ Commands ")[1]
    return dict(re.findall(r"^│ (\S+) +(\S.*?) *│$", panel, re.M))


def test_help_lists_every_command_with_a_summary():
    listed = listed_commands()
    assert set(listed) == COMMANDS, listed
    for group, commands in SUBCOMMANDS.items():
        listed |= {f"{group} {name}": summary for name, summary in listed_commands(group).items()}
        assert {name for name in listed if name.startswith(f"{group} ")} == {f"{group} {c}" for c in commands}


@pytest.mark.parametrize("command", sorted(COMMANDS - set(SUBCOMMANDS))
                         + [f"{group} {name}" for group, names in SUBCOMMANDS.items() for name in sorted(names)])
def test_every_command_has_its_own_help(command):
    assert f"Usage: rcnn {command} [OPTIONS]" in help_of(*command.split())


def test_config_show_applies_overrides():
    out = rcnn("config", "show", "model=resnet50_fpn_v2", "model.box_score_thresh=0.3")
    assert out.returncode == 0, out.stderr
    assert "backbone: resnet50_fpn_v2" in out.stdout and "box_score_thresh: 0.3" in out.stdout


@pytest.mark.parametrize("override,expected", [
    ("model=resnet5_fpn", "unknown model 'resnet5_fpn'; did you mean resnet50_fpn"),
    ("model.min_sise=3", "unknown config key 'model.min_sise'; did you mean min_size"),
])
def test_bad_override_is_one_line_and_exit_2(override, expected):
    out = rcnn("config", "show", override)
    assert out.returncode == 2
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0], out.stderr
    assert "Traceback" not in out.stderr


def test_user_config_dir_adds_a_preset(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "tiny.yaml").write_text(
        "defaults: [_faster_rcnn, _self_]\nname: tiny\nbackbone: resnet18_fpn\nmin_size: 256\n")
    out = rcnn("config", "show", "--config-dir", str(tmp_path), "model=tiny")
    assert out.returncode == 0, out.stderr
    assert "name: tiny" in out.stdout and "min_size: 256" in out.stdout
