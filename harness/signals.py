"""SIGINT/SIGTERM for the harness process: rollback code runs to its end whichever way a run is stopped.

- ``interrupts_raise()``: while inside, SIGTERM raises ``Terminated`` (a KeyboardInterrupt) and SIGINT raises
  KeyboardInterrupt, so every ``finally`` (fault recovery, teardown) runs. The runner holds it for a whole run;
  the fault lifecycle for one fault, keeping a handler somebody else (the runner) installed.
- ``held()``: SIGINT/SIGTERM are held back while a rollback runs and delivered (and raise) right after it.
- ``handlers_kept()``: around a library call that replaces our handlers for good (ray.init, ansible-runner).

Handlers can only be installed in the main thread; elsewhere ``interrupts_raise`` and ``handlers_kept`` do
nothing (the main thread gets the signal anyway).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

INTERRUPTS = (signal.SIGINT, signal.SIGTERM)
Handler = Callable[[int, FrameType | None], object] | int | None


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so every ``finally`` runs."""


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated(f"signal {signum}")


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _unset(handler: Handler) -> bool:
    return handler in (signal.SIG_DFL, None)


@contextmanager
def interrupts_raise(*, override: bool = True) -> Iterator[None]:
    """SIGTERM -> ``Terminated``, SIGINT -> KeyboardInterrupt while inside (main thread only).

    ``override``: also where a handler is already set (the runner: Ctrl-C must raise even where a parent shell
    left SIGINT ignored); False keeps a handler already installed and only replaces the default action."""
    if not _main_thread():
        yield
        return
    wanted: dict[int, Handler] = {signal.SIGTERM: _raise_terminated, signal.SIGINT: signal.default_int_handler}
    previous: dict[int, Handler] = {}
    for sig, handler in wanted.items():
        if override or _unset(signal.getsignal(sig)):
            previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def held() -> Iterator[None]:
    """Hold SIGINT/SIGTERM back for this thread while inside; they are delivered (and raise) right after."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, set(INTERRUPTS))
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


@contextmanager
def handlers_kept() -> Iterator[None]:
    """Give back the SIGINT/SIGTERM handlers a library call inside replaced (main thread only)."""
    saved = {sig: signal.getsignal(sig) for sig in INTERRUPTS} if _main_thread() else {}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            if handler is not None:
                signal.signal(sig, handler)
