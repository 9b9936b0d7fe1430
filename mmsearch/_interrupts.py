"""Ctrl-C that stops a process once, cleanly, and never in the middle of a database call.

``interrupt_once`` makes SIGINT and SIGTERM raise KeyboardInterrupt once; later ones are
ignored, so a second Ctrl-C (or the terminal's SIGINT to the whole group) cannot cut the
clean-up short.

Python runs a signal handler between any two bytecodes of the main thread, so an interrupt can
land inside SQLAlchemy or the Optuna journal halfway through a write and leave a connection
holding the SQLite write lock, which the interrupted process's own clean-up then waits on (MLflow
sets a 20 s busy time-out per attempt). ``deferred()`` holds an interrupt off until the block
it guards is over: every MLflow call, every claim and report of a trial is whole or not at all.

It can also land in a weakref callback or a ``__del__`` run by the garbage collector, where an
exception cannot propagate: Python would print it as "Exception ignored" with a traceback and
carry on as if never interrupted. Such an interrupt is caught on its way to
``sys.unraisablehook`` and sent again.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

REDELIVER_AFTER_S = 0.05
_held = 0  # depth of ``deferred()`` blocks in the main thread
_pending = False  # an interrupt arrived while held
_received = False  # an interrupt arrived: this process is stopping


class Interrupted(KeyboardInterrupt):
    """The KeyboardInterrupt ``interrupt_once`` raises."""


def _handler(_signum: int, _frame: Any) -> None:
    global _pending, _received
    _received = True
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if _held:
        _pending = True
        return
    raise Interrupted


def _redeliver(unraisable: Any, previous: Any = sys.unraisablehook) -> None:
    if isinstance(unraisable.exc_value, Interrupted):
        # Not now: a handler run now would raise inside this hook and be dropped the same way.
        # Python runs it at the first check of the main thread after the signal, almost surely
        # outside any finalizer; if in one again, this hook sends it again.
        signal.signal(signal.SIGINT, _handler)
        threading.Timer(REDELIVER_AFTER_S, os.kill, args=(os.getpid(), signal.SIGINT)).start()
        return
    previous(unraisable)


def _noting_handler(_signum: int, _frame: Any) -> None:
    global _received
    _received = True
    raise KeyboardInterrupt


def note_interrupts() -> None:
    """Ctrl-C raises KeyboardInterrupt, as Python's own handler does, and is remembered: a
    library may turn it into an error of its own (pydantic-core does, building a validator while
    mlflow imports), which ``stopping()`` then still tells apart from a failure. For a command's
    start, until it installs ``interrupt_once``; a Ctrl-C ignored by whoever started us stays so."""
    if (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
        signal.signal(signal.SIGINT, _noting_handler)


def interrupt_once() -> None:
    """Install the handlers (in the main thread of a process that must clean up on Ctrl-C). A
    Ctrl-C noted before (``note_interrupts``) whose KeyboardInterrupt a library swallowed is
    answered now, as if it had just arrived."""
    global _received
    sys.unraisablehook = _redeliver
    signal.signal(signal.SIGINT, _handler)
    signal.signal(signal.SIGTERM, _handler)
    if _received:
        _received = False
        os.kill(os.getpid(), signal.SIGINT)  # answered by the handler just installed, at the next bytecode


@contextmanager
def deferred() -> Iterator[None]:
    """Raise an interrupt that arrives inside the block when the block is over. Blocks nest;
    in threads other than the main one (which Python never interrupts) this does nothing."""
    global _held, _pending
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _held += 1
    try:
        yield
    finally:
        _held -= 1
        if not _held and _pending:
            _pending = False
            raise Interrupted


def stopping() -> bool:
    """Whether this process has been interrupted (its clean-up is running or about to)."""
    return _received


def raise_if_held() -> None:
    """Raise an interrupt that ``deferred()`` is holding off, now. For waits that have written
    nothing yet (a lock not yet taken): holding the interrupt until a wait that may never end is
    over would make Ctrl-C do nothing."""
    global _pending
    if _pending and threading.current_thread() is threading.main_thread():
        _pending = False
        raise Interrupted

