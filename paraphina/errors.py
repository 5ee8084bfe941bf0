"""User-facing errors: one line naming the problem and its fix, a non-zero exit, no traceback."""
from __future__ import annotations

import atexit
import functools
import gc
import sys
from typing import Callable, TypeVar

T = TypeVar("T")

EXIT_USER_ERROR = 2

# The interpreter's final collections over everything MLflow, SQLAlchemy and pandas allocated add about a
# second to the exit of every command; freezing the objects at exit skips them. Registered first, it runs
# last: exit handlers registered later (the tracking store folding its log into the database) run before it.
# At exit only, so a process that calls commands as functions (the tests) collects as usual.
atexit.register(gc.freeze)


class ParaphinaError(Exception):
    """A problem with the user's input or environment, explained in one line."""


def fail(message: str) -> None:
    """Print `error: message` on one line to stderr and exit with the user-error code."""
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
    raise SystemExit(EXIT_USER_ERROR)


def cli_errors(main: Callable[..., T]) -> Callable[..., T]:
    """Wrap a command-line entry point so ParaphinaError ends the program with a one-line message."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except ParaphinaError as exc:
            fail(str(exc))
        except BrokenPipeError:  # output piped into a command that stopped reading (e.g. head)
            sys.stderr.close()
            raise SystemExit(0)
        except KeyboardInterrupt:
            fail("interrupted; runs already finished are recorded, the unfinished one is not")

    return wrapper
