"""Stopping a command cleanly: SIGINT and SIGTERM raise `Stopped`, never inside a store write, and the hooks
registered here end whatever the command left open before it exits."""
from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
StopHook = Callable[[BaseException], "str | None"]


class Stopped(KeyboardInterrupt):
    """The command was stopped by a signal (SIGINT or SIGTERM); a KeyboardInterrupt, so every cleanup runs."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class _State:
    """Depth of the writes in progress, a signal that arrived during one, and the hooks to run at the end."""

    depth = 0
    pending: int | None = None
    raised: int | None = None     # a signal whose Stopped was raised: Python drops one raised in a finalizer
    hooks: list[StopHook] = []
    resets: list[Callable[[], None]] = []


def _on_signal(signum: int, frame: object) -> None:
    """Raise `Stopped` now, or when the write in progress is done (a write cut short would hold the store's lock)."""
    if _State.depth:
        _State.pending = signum
        return
    _State.raised = signum
    raise Stopped(signum)


def raise_if_stopped() -> None:
    """Raise `Stopped` again for a stop signal whose `Stopped` was lost: one that arrives in a garbage-collector
    callback or a `__del__` is printed and dropped by Python. Called between a command's steps."""
    if _State.raised is not None and threading.current_thread() is threading.main_thread():
        raise Stopped(_State.raised)


@contextmanager
def uninterrupted() -> Iterator[None]:
    """A block a stop signal does not cut: a signal that arrives meanwhile raises `Stopped` when it ends.
    Signals reach the main thread only, so a block in another thread is left as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _State.depth += 1
    try:
        yield
    finally:
        _State.depth -= 1
        if _State.depth == 0 and _State.pending is not None:
            signum, _State.pending = _State.pending, None
            raise Stopped(signum)


@contextmanager
def _signals_to(handler: Callable | int) -> Iterator[None]:
    """SIGINT and SIGTERM go to `handler` while the block runs, in the main thread (only it can set handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {signum: signal.signal(signum, handler) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, previous in saved.items():
            signal.signal(signum, previous)


@contextmanager
def stop_signals() -> Iterator[None]:
    """SIGINT and SIGTERM raise `Stopped` while the block (a command) runs, in the main thread; the hooks forget
    what earlier commands of the process left them."""
    _State.pending = _State.raised = None
    for reset in _State.resets:
        reset()
    with _signals_to(_on_signal):
        yield


def on_stop(hook: StopHook, reset: Callable[[], None]) -> None:
    """Register `hook(exc)`, run when a command ends by an exception or a stop (it returns a note or None), and
    `reset()`, run when a command starts."""
    if hook not in _State.hooks:
        _State.hooks.append(hook)
        _State.resets.append(reset)


def end_open_work(exc: BaseException) -> list[str]:
    """Run the registered hooks with further stop signals ignored (a second Ctrl-C cannot cut the cleanup short);
    returns their notes."""
    with _signals_to(signal.SIG_IGN):
        return [note for hook in list(_State.hooks) if (note := hook(exc))]
