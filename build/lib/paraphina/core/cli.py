"""What every command line shares: one-line errors (no traceback) and the argparse parser of the research tools."""
from __future__ import annotations

import argparse
import atexit
import functools
import gc
import math
import sys
from typing import Callable, NoReturn, TypeVar

from paraphina.core.errors import EXIT_USER_ERROR, ParaphinaError

T = TypeVar("T")


def fail(message: str) -> NoReturn:
    """Print `error: message` on one line to stderr and exit with the user-error code."""
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
    raise SystemExit(EXIT_USER_ERROR)


def cli_errors(main: Callable[..., T]) -> Callable[..., T]:
    """Wrap a command-line entry point so ParaphinaError ends the program with a one-line message.

    It also freezes the heap at exit: the interpreter's final collections over what MLflow, SQLAlchemy and
    pandas allocated add about a second to every command. Registered when the command starts, it runs after
    the exit handlers registered later (the tracking store folding its log into the database).
    """

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        atexit.unregister(gc.freeze)
        atexit.register(gc.freeze)
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


class ToolParser(argparse.ArgumentParser):
    """An argparse parser whose usage errors are one line (`error: ...; see --help`) with exit code 2."""

    def error(self, message: str) -> NoReturn:
        raise ParaphinaError(f"{self.prog}: {message}; see {self.prog} --help")


def finite_float(text: str) -> float:
    """argparse type: a finite number."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


def add_tracking_argument(parser: argparse.ArgumentParser) -> None:
    """The `--tracking-uri` flag of the research tools."""
    parser.add_argument(
        "--tracking-uri",
        metavar="URI",
        help="MLflow tracking store (default: $MLFLOW_TRACKING_URI, else the project's mlruns/mlflow.db)",
    )
