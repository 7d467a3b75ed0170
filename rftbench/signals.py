"""SIGTERM / SIGINT / SIGUSR2 as a request to stop at the next safe point (training and evaluation alike).

:class:`StopRequest` replaces the handlers of these signals while it is installed (SIGUSR2 is
SLURM's warning before a time limit or a preemption; the submitit launcher then requeues the run): the first
signal records its name in :attr:`StopRequest.requested` (the caller stops at its next
optimizer step, epoch end or evaluation block, with its state saved) and says so at once in one
line on stderr (:func:`rftbench.progress.announce`); a second one raises ``KeyboardInterrupt`` at once. Handlers are installed only in the main thread (where Python
delivers signals) and the previous ones come back on :meth:`StopRequest.restore`.
"""
from __future__ import annotations

import signal
import threading
from typing import Any, Callable, Optional, Union

from .progress import announce


class StopRequest:
    """The stop-request handler of SIGTERM / SIGINT (see the module docstring); ``what`` names
    the work in the messages; ``safe_point`` says where it stops (a text, or a function giving
    it when the signal comes: ``"after block 2 of 5"``); a context manager, or :meth:`install` /
    :meth:`restore`."""

    #: SIGUSR2 is what SLURM sends before a time limit or a preemption (submitit's ``--signal``)
    SIGNALS = (signal.SIGTERM, signal.SIGINT) + ((signal.SIGUSR2,) if hasattr(signal, "SIGUSR2") else ())

    def __init__(self, what: str = "", enabled: bool = True,
                 safe_point: Union[str, Callable[[], str]] = "at the next safe point"):
        self.what, self.enabled, self.safe_point = what, enabled, safe_point
        self.requested: Optional[str] = None
        self._previous: dict[int, Any] = {}

    def message(self, name: str) -> str:
        """What the first signal ``name`` prints: what stops where, and how to stop at once."""
        where = self.safe_point() if callable(self.safe_point) else self.safe_point
        return (f"{name} received: {self.what or 'the work'} will stop {where}, its state saved; "
                f"a second Ctrl-C (or SIGTERM) stops it at once.")

    def _handler(self, signum, frame):
        name = signal.Signals(signum).name
        if self.requested is not None:
            raise KeyboardInterrupt(f"second {name}" + (f": {self.what} stopped at once" if self.what else ""))
        self.requested = name
        try:
            text = self.message(name)
        except Exception:  # noqa: BLE001 - a safe_point that fails must not lose the stop request
            text = f"{name} received: {self.what or 'the work'} will stop at the next safe point."
        announce(text)

    def install(self) -> "StopRequest":
        if self.enabled and not self._previous and threading.current_thread() is threading.main_thread():
            self._previous = {s: signal.signal(s, self._handler) for s in self.SIGNALS}
        return self

    def restore(self) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)
        self._previous = {}

    def __enter__(self) -> "StopRequest":
        return self.install()

    def __exit__(self, *exc) -> None:
        self.restore()
