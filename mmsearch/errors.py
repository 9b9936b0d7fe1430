"""The exception hierarchy: every error a user can cause derives from :class:`MmsearchError`.

The CLI prints these messages without a traceback, so each message must stand on its own:
name the file/line/field, the offending value and what would be valid.
"""

from __future__ import annotations

from dataclasses import dataclass


class MmsearchError(Exception):
    """Base class of every error mmsearch raises on bad input or a missing asset."""


@dataclass(frozen=True)
class Problem:
    """One problem found while validating a file: where it is, what was found, what is valid."""

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


class ValidationError(MmsearchError):
    """Several problems reported at once, so a user fixes them all in one pass."""

    def __init__(self, title: str, problems: list[Problem]) -> None:
        self.title = title
        self.problems = list(problems)
        lines = [f"{title} ({len(self.problems)} problem{'s' if len(self.problems) != 1 else ''}):"]
        lines += [f"  - {p}" for p in self.problems]
        super().__init__("\n".join(lines))


class ConfigError(ValidationError):
    """An experiment or sweep file (or a --set override) is invalid."""


class DataError(ValidationError):
    """A dataset folder does not follow the COMP5329 layout."""


class AssetMissingError(MmsearchError):
    """A downloadable asset (weights, word vectors, NLTK data) is absent and cannot be fetched."""


class LockStuck(MmsearchError):
    """A lock the run needs stayed held past the wait allowed (the grace), by a process that does
    not let go: the run cannot go on and ends incomplete (exit 3), having lost nothing."""


class StudyLockStuck(LockStuck):
    """The study's lock (its journal file, or a study lock beside it) stayed held."""


class TrackingStoreLocked(LockStuck):
    """The MLflow SQLite store stayed locked (by a process stopped mid-write, or one holding a
    transaction open): no run can be written there."""


class UnknownNameError(MmsearchError, KeyError):
    """A registry lookup failed; the message lists what is registered."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0])


def first_line(exc: BaseException, limit: int = 300) -> str:
    """``Type: first line of the message``: what one log line says of an error whose message
    (a CUDA or allocator error) may run to pages."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:limit] if lines else ''}"
