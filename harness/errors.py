"""Errors that point at the user's input: the file, the row and the field."""
from __future__ import annotations

from harness.config import ConfigError

__all__ = ["ConfigError", "DataError", "RunError", "USER_ERRORS", "UnknownNameError"]


class DataError(ValueError):
    """A data row that cannot be used; the message names the source, row and field."""

    def __init__(self, source: str, row: int | str | None, field: str | None, msg: str, *,
                 line: int | None = None):
        self.source, self.row, self.field, self.line = source, row, field, line
        where = source if line is None else f"{source}:{line}"  # file:line, as compilers write it
        if row is not None:
            where += f": row {row}"
        if field:
            where += f": field {field!r}"
        super().__init__(f"{where}: {msg}")


class RunError(RuntimeError):
    """A run that cannot go on for a reason outside the code (no space left on the device, no usable
    checkpoint, a checkpoint from another setup); the message is one line naming the path."""


class UnknownNameError(KeyError):
    """A name the user gave (paper, table, row, benchmark, method, stage, training set, reward)
    that is not known; the message lists the known ones. A ``KeyError`` for compatibility."""

    def __str__(self) -> str:  # KeyError's str() quotes its message
        return str(self.args[0]) if self.args else ""


USER_ERRORS: tuple[type[Exception], ...] = (ConfigError, DataError, RunError, UnknownNameError)
"""What a CLI reports as one line and exit code 2 (everything else is a bug: traceback)."""
