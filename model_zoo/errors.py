"""Errors in what the user gave (a file, a name, an option, a dataset): one line that names the thing and says what
is wrong. `lowshot` prints them without a traceback and exits with code 2 (`--debug` shows the traceback);
anything else is a bug and keeps its traceback.

Each class also derives from the built-in type code would expect (`KeyError` for an unknown name,
`FileNotFoundError` for a missing file, `ValueError` for bad content), so callers of the library can catch either.
"""
from __future__ import annotations


class LowshotError(Exception):
    """Base of every user-facing error; `str(error)` is the whole message."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else self.__class__.__name__


class UnknownNameError(LowshotError, KeyError):
    """An unknown model, task, classifier, setting or layout name."""


class MissingFileError(LowshotError, FileNotFoundError):
    """A file or folder the user pointed at (or a dataset lists) is not there."""


class BadInputError(LowshotError, ValueError):
    """A file or value that is there but cannot be used as it is (corrupt image, bad option value...)."""


class MissingPackageError(LowshotError, ImportError):
    """An optional package that the chosen option needs is not installed (the message says which and how)."""


class WriteError(LowshotError, OSError):
    """A file the suite must write cannot be written: a full disk, a read-only or forbidden directory. The message
    names the path and what was being written; nothing half-written is left."""


class NonFiniteError(LowshotError, FloatingPointError):
    """A feature or score that is NaN or infinite (a broken checkpoint, a corrupt record)."""


class LowshotWarning(UserWarning):
    """Something the user should know that does not stop the run (a damaged cache file, a suspicious option)."""


def first_line(error: BaseException) -> str:
    """The first non-empty line of an error's message (a library's multi-line message, shortened to its gist)."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    return lines[0] if lines else "no detail"


def one_line(error: BaseException) -> str:
    """The message of `error` as one line. Errors raised in a DataLoader worker come back with the worker's
    traceback in their message: its last line is the original message."""
    lines = [ln for ln in str(error).splitlines() if ln.strip()]
    if not lines:
        return type(error).__name__
    if "Original Traceback" in str(error):
        last = lines[-1]
        return last.split(": ", 1)[1] if ": " in last and last.split(": ", 1)[0].endswith("Error") else last
    return " ".join(ln.strip() for ln in lines)
