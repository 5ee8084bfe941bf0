"""The error of bad user input: entry points print it as one line naming the problem and its fix."""
from __future__ import annotations

EXIT_USER_ERROR = 2


class ParaphinaError(Exception):
    """A problem with the user's input or environment, explained in one line."""
