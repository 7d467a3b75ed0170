"""SIGTERM / SIGINT as a request to stop at the next safe point (training and evaluation alike).

:class:`StopRequest` replaces the handlers of both signals while it is installed: the first
signal only records its name in :attr:`StopRequest.requested` (the caller stops at its next
optimizer step, epoch end or evaluation block, with its state saved); a second one raises
``KeyboardInterrupt`` at once. Handlers are installed only in the main thread (where Python
delivers signals) and the previous ones come back on :meth:`StopRequest.restore`.
"""
from __future__ import annotations

import signal
import threading
from typing import Any, Optional


class StopRequest:
    """The stop-request handler of SIGTERM / SIGINT (see the module docstring); ``what`` names
    the work in the second signal's message; a context manager, or :meth:`install` / :meth:`restore`."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, what: str = "", enabled: bool = True):
        self.what, self.enabled = what, enabled
        self.requested: Optional[str] = None
        self._previous: dict[int, Any] = {}

    def _handler(self, signum, frame):
        name = signal.Signals(signum).name
        if self.requested is not None:
            raise KeyboardInterrupt(f"second {name}" + (f": {self.what} stopped at once" if self.what else ""))
        self.requested = name

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
