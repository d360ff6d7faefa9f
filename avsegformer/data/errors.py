"""The error every dataset reader raises for a missing or malformed file."""

__all__ = ["AVSDataError"]


class AVSDataError(ValueError):
    """A dataset file is missing or malformed; the message names the file."""
