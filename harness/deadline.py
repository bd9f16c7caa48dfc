"""A hard time limit on in-process text work (answer extraction) that cannot be given to a
worker process cheaply.

``call_with_deadline(fn, *args, timeout_s=..., default=...)`` runs ``fn(*args)`` and returns
``default`` if it runs past ``timeout_s`` seconds. On the main thread of a POSIX process it arms
``ITIMER_REAL``; the ``SIGALRM`` handler raises inside ``fn``, which stops pure-Python loops at the
next bytecode and the ``re`` engine within a few thousand steps (CPython's matcher checks for
signals as it runs). Elsewhere (another thread, no ``setitimer``) ``fn`` runs unguarded: every
extraction is linear in a bounded window (``harness.answers.MAX_SCAN_CHARS``), so the guard is the
second line of defence, not the first. A timer the caller armed (pytest-timeout, a job runner)
is kept: if it fires first it stays in charge, otherwise it is re-armed afterwards with the time
it had left.
"""
from __future__ import annotations

import signal
import threading
import time
from typing import Any, Callable, TypeVar

T = TypeVar("T")
DEFAULT_TIMEOUT_S = 5.0
"""As ``harness.rewards.verify``'s default limit."""


class DeadlineExceeded(Exception):
    """Raised inside the guarded call when its time is up (caught by ``call_with_deadline``)."""


def _usable() -> bool:
    return hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()


def _raise(signum: int, frame: Any) -> None:
    raise DeadlineExceeded()


def call_with_deadline(fn: Callable[..., T], *args: Any, timeout_s: float | None = None,
                       default: T | None = None) -> T | None:
    """``fn(*args)``, or ``default`` when it runs past ``timeout_s`` (None: ``DEFAULT_TIMEOUT_S``,
    read at call time; see the module docstring). ``timeout_s <= 0`` runs ``fn`` unguarded."""
    if timeout_s is None:
        timeout_s = DEFAULT_TIMEOUT_S
    if timeout_s <= 0 or not _usable():
        return fn(*args)
    outer = signal.getitimer(signal.ITIMER_REAL)[0]
    if 0 < outer <= timeout_s:
        return fn(*args)  # the caller's own timer fires first and stays in charge
    start = time.monotonic()
    previous = signal.signal(signal.SIGALRM, _raise)
    try:
        signal.setitimer(signal.ITIMER_REAL, timeout_s)
        try:
            return fn(*args)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except DeadlineExceeded:
        return default
    finally:
        signal.signal(signal.SIGALRM, previous)
        if outer > 0:  # re-arm the caller's timer (e.g. pytest-timeout) with what it had left
            signal.setitimer(signal.ITIMER_REAL, max(outer - (time.monotonic() - start), 1e-3))
