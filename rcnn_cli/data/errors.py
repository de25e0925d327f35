"""Errors the data layer raises for the user: each message is one line (what, which file, what to do)."""


class DatasetError(ValueError):
    """The configured data cannot be used at all (missing folder, no annotations, strict mode)."""
