"""Ctrl-C and SIGTERM as exceptions that keep what was done, held back while the console is
written: an interrupt inside tqdm's write lock would leave the lock half-taken and surface as a
RuntimeError traceback instead of a clean stop."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C (what was done is kept) but with its own exit status."""


class Interrupts:
    """Raises the interrupt where it arrives, unless inside ``held()``: then on leaving it."""

    def __init__(self) -> None:
        self._holding = 0
        self._pending: type[KeyboardInterrupt] | None = None

    def _on_signal(self, signum: int, frame: object) -> None:
        kind = Terminated if signum == signal.SIGTERM else KeyboardInterrupt
        if self._holding:
            self._pending = self._pending or kind
            return
        raise kind()

    @contextmanager
    def held(self) -> Iterator[None]:
        """A short stretch (a console write) that an interrupt must not cut in two."""
        self._holding += 1
        try:
            yield
        finally:
            self._holding -= 1
            if not self._holding and self._pending:
                kind, self._pending = self._pending, None
                raise kind()

    @contextmanager
    def installed(self) -> Iterator[None]:
        """Our handlers for the command's duration. Signals belong to the main thread only, and an
        ignored SIGINT (a shell's background job) stays ignored."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, self._on_signal)}
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            previous[signal.SIGINT] = signal.signal(signal.SIGINT, self._on_signal)
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


INTERRUPTS = Interrupts()
