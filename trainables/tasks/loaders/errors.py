"""The two ways reading real data fails: the data is not there, or it is there but malformed."""

from __future__ import annotations


class DataUnavailable(ValueError):
    """A (task, language, split) the configured source does not have (one line says why and what to do)."""


class DataFormatError(ValueError):
    """A data file that does not have the expected shape (one line names the file and the line)."""


def where(path: object, line: int | None = None) -> str:
    """'path:line' (or just 'path') for error messages."""
    return f"{path}:{line}" if line is not None else str(path)
