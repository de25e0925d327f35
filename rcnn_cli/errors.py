"""One base class for every error the user should see as one line instead of a traceback.

Commands raise; ``rcnn_cli.cli.main`` prints ``error: <message>`` once and exits with the error's
code: 2 for usage and configuration (the command line or the files it names must change), 1 for
a job that started and failed.
"""

from __future__ import annotations

import difflib


class RcnnError(Exception):
    """An error with a one-line message for the user and the exit code it ends the command with."""

    exit_code = 2


class UsageError(RcnnError):
    """A wrong option, value or file on the command line."""


class JobFailed(RcnnError):
    """The job ran and failed (diverged, out of memory, an export that disagreed with torch)."""

    exit_code = 1


def nearest_hint(word: str, choices: list[str]) -> str:
    """The end of every "wrong value" line: the nearest valid choices, or all of them."""
    near = difflib.get_close_matches(word, choices, n=3, cutoff=0.5)
    if near:
        return "did you mean " + " or ".join(near) + "?"
    return "valid: " + ", ".join(choices)
