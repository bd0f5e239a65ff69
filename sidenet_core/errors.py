"""User-facing errors.

A :class:`UserError` is bad input the user can fix (unknown name, value out of range, missing data).
The CLI prints its message as one line and exits with code 2; anything else is a bug and keeps its
traceback. Messages should name the fix, not just the problem.
"""

from __future__ import annotations


class UserError(ValueError):
    """Bad input with a one-line message that names the fix."""

    def __init__(self, message: str) -> None:
        if "\n" in message:
            raise AssertionError("UserError messages must be one line")
        super().__init__(message)


class DataNotFoundError(UserError):
    """A data set is neither available offline nor downloadable here."""
