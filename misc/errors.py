"""Errors the user can fix: a flag, a path, a list, a file given or left by an earlier run. Each
carries a message that says what is wrong and how to fix it; run_sample.py prints that message
alone (the traceback goes to the log file, and to the screen with --debug True). An exception of
any other type is a fault of the code and keeps its traceback.

Each is also the built-in type its callers and tests catch (ValueError, FileNotFoundError, ...)."""
from __future__ import annotations


class UserError(Exception):
    """An error in what the user gave, with its fix in the message."""


class BadInput(UserError, ValueError):
    """A value, list or file is not what the step needs."""


class MissingInput(UserError, FileNotFoundError):
    """A path given, or an earlier step's output, is not there."""


class MissingLabels(UserError, KeyError):
    """Ids of a list without image-level labels."""

    def __str__(self) -> str:  # a KeyError would quote its message
        return str(self.args[0]) if self.args else ""


class CannotWrite(UserError, OSError):
    """An output could not be written (a full disk, no permission); earlier outputs are intact."""
