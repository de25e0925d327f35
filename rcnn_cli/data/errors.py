"""Errors the data layer raises for the user: each message is one line (what, which file, what to do)."""

from ..errors import RcnnError


class DatasetError(RcnnError, ValueError):
    """The configured data cannot be used at all (missing folder, no annotations, strict mode)."""
