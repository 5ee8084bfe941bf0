"""What every command line shares: one-line errors (no traceback) and the argparse parser of the research tools."""
from __future__ import annotations

import argparse
import atexit
import functools
import gc
import math
import signal
import sys
from typing import Callable, NoReturn, TypeVar

from paraphina.core.errors import EXIT_USER_ERROR, ParaphinaError
from paraphina.core.stops import Stopped, end_open_work, raise_if_stopped, stop_signals

T = TypeVar("T")
MAX_PORT = 65535
MACHINE_ERRORS = (MemoryError, OSError)
"""What the machine refuses a command (memory, a disk, a path): one line too, not a traceback."""


def fail(message: str, code: int = EXIT_USER_ERROR) -> NoReturn:
    """Print `error: message` on one line to stderr and exit with `code` (by default the user-error code)."""
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
    raise SystemExit(code)


def fail_after(message: str, exc: BaseException, code: int = EXIT_USER_ERROR) -> NoReturn:
    """`fail` once the stop hooks have ended the work the command left open, their notes appended."""
    fail("; ".join([message, *end_open_work(exc)]), code)


def machine_problem(exc: BaseException) -> str:
    """The one line for a MACHINE_ERRORS exception: what was refused, and how to ask less or free it."""
    if isinstance(exc, MemoryError):   # numpy's allocation failures say how much they asked for
        return f"out of memory: {str(exc) or 'an allocation failed'}; run fewer runs or seeds per command"
    where = " -> ".join(str(name) for name in (exc.filename, exc.filename2) if name is not None) or "a file"
    return (f"{where}: {exc.strerror or exc}; free disk space or fix the path or its permissions, then run the same "
            f"command again")


def reader_stopped() -> NoReturn:
    """End quietly with status 0: the output was piped into a command that stopped reading (e.g. head), and the
    interpreter's flush of stdout at exit would fail again on stderr."""
    sys.stderr.close()
    raise SystemExit(0)


def cli_errors(main: Callable[..., T]) -> Callable[..., T]:
    """Wrap a command-line entry point so ParaphinaError (or what the machine refuses, MACHINE_ERRORS) ends the
    program with a one-line message, and SIGINT or SIGTERM with one line saying what became of the unfinished work
    (see `core.stops`).

    It also freezes the heap at exit: the interpreter's final collections over what MLflow, SQLAlchemy and
    pandas allocated add about a second to every command. Registered when the command starts, it runs after
    the exit handlers registered later (the tracking store folding its log into the database).
    """

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        atexit.unregister(gc.freeze)
        atexit.register(gc.freeze)
        try:
            with stop_signals():
                done = main(*args, **kwargs)
                raise_if_stopped()   # a stop the work went on through ends the command as a stop
                return done
        except ParaphinaError as exc:
            fail_after(str(exc), exc)
        except BrokenPipeError:
            reader_stopped()
        except MACHINE_ERRORS as exc:
            fail_after(machine_problem(exc), exc)
        except KeyboardInterrupt as exc:  # exit status 128 + the signal's number, as a shell reports it
            signum = exc.signum if isinstance(exc, Stopped) else signal.SIGINT
            notes = getattr(exc, "__notes__", [])   # what the stopped work kept, where it says so
            fail_after("; ".join([f"stopped by {signal.Signals(signum).name}", *notes]), exc, 128 + signum)
        except BaseException as exc:
            end_open_work(exc)
            raise

    return wrapper


class ToolParser(argparse.ArgumentParser):
    """An argparse parser whose usage errors are one line (`error: ...; see --help`) with exit code 2."""

    def error(self, message: str) -> NoReturn:
        raise ParaphinaError(f"{self.prog}: {message}; see {self.prog} --help")


def _argument_type(convert: Callable[[str], T], valid: Callable[[T], bool], what: str) -> Callable[[str], T]:
    """An argparse type: `convert(text)` where it succeeds and is `valid`, else the error "'text' is not `what`"."""
    def parse(text: str) -> T:
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not valid(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return value
    return parse


finite_float = _argument_type(float, math.isfinite, "a finite number")
positive_int = _argument_type(int, lambda value: value >= 1, "a positive integer")


def port_number(text: str) -> int:
    """argparse type: a TCP port, 1 to 65535."""
    value = positive_int(text)
    if value > MAX_PORT:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (1 to {MAX_PORT})")
    return value


def add_tracking_argument(parser: argparse.ArgumentParser) -> None:
    """The `--tracking-uri` flag of the research tools."""
    parser.add_argument(
        "--tracking-uri",
        metavar="URI",
        help="MLflow tracking store (default: $MLFLOW_TRACKING_URI, else the project's mlruns/mlflow.db)",
    )
