"""The exceptions for user mistakes.

Everything a user can get wrong (a missing file, an unknown profile, a column
the export lacks, a parameter the notebook does not declare) raises a
:class:`QuarterpanicError`. The CLI prints it as one line and exits with its
``exit_code``; anything else is a programming error and keeps its traceback.
"""
from __future__ import annotations


class QuarterpanicError(Exception):
    """A user mistake, reported as one line naming what to fix."""

    exit_code = 2

    def __init__(self, message: str, *, path: str | None = None, hint: str | None = None):
        self.path = str(path) if path is not None else None
        self.hint = hint
        super().__init__(message)

    def __str__(self) -> str:
        text = super().__str__()
        if self.path:
            text = f"{self.path}: {text}"
        if self.hint:
            text = f"{text} — {self.hint}"
        return text


class ExportError(QuarterpanicError):
    """An export file cannot be used at all (empty, not tabular, unreadable, missing columns)."""


class ProfileError(QuarterpanicError):
    """A vendor profile or column-mapping YAML is unknown or malformed."""


class NoDataError(QuarterpanicError):
    """The exports hold nothing to analyse (header-only files, every row rejected)."""


class ParameterError(QuarterpanicError):
    """A run parameter is unknown, mistyped or out of range."""


class CalendarError(QuarterpanicError):
    """A fiscal calendar specification is invalid."""


class RunError(QuarterpanicError):
    """A run cannot start or reach its workers: no notebooks, a bad --run-id, an unreachable scheduler."""
