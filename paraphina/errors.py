"""User-facing errors: one line naming the problem and its fix, a non-zero exit, no traceback."""
from __future__ import annotations

import functools
import gc
import sys
from typing import Callable, TypeVar

T = TypeVar("T")

EXIT_USER_ERROR = 2


class ParaphinaError(Exception):
    """A problem with the user's input or environment, explained in one line."""


def fail(message: str) -> None:
    """Print `error: message` on one line to stderr and exit with the user-error code."""
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
    raise SystemExit(EXIT_USER_ERROR)


def cli_errors(main: Callable[..., T]) -> Callable[..., T]:
    """Wrap a command-line entry point so ParaphinaError ends the program with a one-line message.

    When the command is done its objects are frozen out of the garbage collector: the interpreter's final
    collections over everything MLflow, SQLAlchemy and pandas allocated would add about a second to the exit
    of every command, and all files and records are closed by then.
    """

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
        finally:
            gc.freeze()

    return wrapper
