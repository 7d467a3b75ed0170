"""Progress of long work other than training (evaluation blocks, sweep eps points, AutoAttack
attacks, shards, grids): a rich progress display on a terminal, plain timestamped lines otherwise.

One API: :func:`task` opens a :class:`Task` (a context manager) on the process's
:class:`ProgressService`; tasks nest (an evaluation's blocks hold its sweep, its checks probe and
its AutoAttack), and :meth:`Task.update` moves one on. :func:`note` prints one line; :func:`announce`
is that for signal handlers (it never raises).

How it shows (as :mod:`rftbench.training.progress` decides for the trainer): ``auto`` is ``rich``
when the stream (default stderr) is a terminal and ``plain`` otherwise; ``off`` shows nothing.
The mode comes from the environment variable ``RFTBENCH_PROGRESS`` (``auto`` when unset) or
:func:`configure` (what a command-line ``--quiet`` would call with ``mode="off"``). Plain lines
look like ``07:41:02 evaluation block 1/3 > sweep 4/8: batch 1/2 eps 4/4 = 16/255: 3/8 robust``;
a line that is not the start or end of an outermost task, nor a note, is printed only when
``min_interval_s`` (default 2 s) passed since the previous line, so logs of long runs stay short
(the latest state is in the next line that is printed). Everything goes to stderr, so ``--json``
output on stdout stays clean. Progress only displays: it never changes what is computed.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from contextlib import contextmanager
from typing import IO, Any, Iterable, Iterator, Optional

MODES = ("auto", "rich", "plain", "off")
ENV = "RFTBENCH_PROGRESS"
DEFAULT_INTERVAL_S = 2.0


def format_eps(eps: float, norm: str = "Linf") -> str:
    """An eps in [0,1] pixel units as people write it: ``2/255`` for Linf (``0.5/255`` when not a
    whole number of grey levels), the plain radius (``0.5``) for L2."""
    if norm != "Linf" or eps == 0:
        return f"{eps:.4g}"
    levels = eps * 255
    return f"{round(levels)}/255" if abs(levels - round(levels)) < 1e-6 else f"{levels:.3g}/255"


class Task:
    """One piece of work in progress: ``completed`` of ``total`` steps (None: not known),
    ``detail`` a short text about the latest step. Open with :func:`task`."""

    def __init__(self, service: "ProgressService", description: str, total: Optional[int], unit: str,
                 detail: str, parent: Optional["Task"]):
        self.service, self.description, self.total, self.unit = service, description, total, unit
        self.detail, self.parent, self.completed = detail, parent, 0
        self.depth = 0 if parent is None else parent.depth + 1
        self.t0 = time.perf_counter()
        self.handle: Any = None

    def update(self, completed: Optional[int] = None, *, advance: int = 0, detail: Optional[str] = None,
               total: Optional[int] = None) -> None:
        """Set ``completed`` (or add ``advance``), the ``detail`` text and the ``total``; shows it."""
        if total is not None:
            self.total = total
        self.completed = (self.completed if completed is None else completed) + advance
        if detail is not None:
            self.detail = detail
        self.service.backend.updated(self)

    def track(self, items: Iterable[Any]) -> Iterator[Any]:
        """Yield ``items``, advancing by one after the work on each (when the next is asked for)."""
        for item in items:
            yield item
            self.update(advance=1)

    def label(self) -> str:
        """How an enclosing task reads in a nested task's line: ``evaluation block 2/3``."""
        if not self.total:
            return self.description
        unit = f" {self.unit}" if self.unit else ""
        return f"{self.description}{unit} {min(self.completed + 1, self.total)}/{self.total}"

    def line(self) -> str:
        """``evaluation block 1/3 > sweep 4/8: batch 1/2 eps 4/4 = 16/255: 3/8 robust``."""
        chain, t = [], self.parent
        while t is not None:
            chain.append(t.label())
            t = t.parent
        own = self.description + (f" {self.completed}/{self.total}" if self.total else "")
        text = " > ".join([*reversed(chain), own])
        return text + (f": {self.detail}" if self.detail else "")


def rich_bar(console: Any, field: str) -> Any:
    """The one look of rftbench's rich bars (this module's and the trainer's): description, bar,
    done/total, elapsed, remaining, then the task's text field ``field``; not started."""
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    return Progress(TextColumn("[bold cyan]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[%s]}" % field),
                    console=console, transient=False)


class _Silent:
    """Shows nothing (mode ``off``)."""

    def opened(self, task: Task) -> None:
        pass

    def updated(self, task: Task) -> None:
        pass

    def closed(self, task: Task, ok: bool) -> None:
        pass

    def note(self, text: str) -> None:
        pass


class _Plain(_Silent):
    """Timestamped lines on the stream (sys.stderr when None), rate-limited (module docstring)."""

    def __init__(self, stream: Optional[IO[str]], min_interval_s: float):
        self.stream, self.min_interval_s = stream, min_interval_s
        self._last = -float("inf")
        self._lock = threading.RLock()

    def _write(self, text: str, force: bool) -> None:
        with self._lock:
            now = time.monotonic()
            if not force and now - self._last < self.min_interval_s:
                return
            self._last = now
            stream = self.stream or sys.stderr
            stream.write(f"{time.strftime('%H:%M:%S')} {text}\n")
            stream.flush()

    def opened(self, task):
        self._write(task.line(), force=task.depth == 0)

    def updated(self, task):
        self._write(task.line(), force=False)

    def closed(self, task, ok):
        took = f"{time.perf_counter() - task.t0:.1f} s"
        what = "done in" if ok else "stopped after"
        self._write(f"{task.line()} ({what} {took})", force=task.depth == 0 or not ok)

    def note(self, text):
        self._write(text, force=True)


class _Rich(_Silent):
    """A rich Progress with one row per open task (nested ones indented and removed when done);
    falls back to plain lines while another rich live display (the trainer's bar) holds the console."""

    def __init__(self, stream: Optional[IO[str]], min_interval_s: float):
        self.stream, self._plain = stream, _Plain(stream, min_interval_s)
        self._progress: Any = None
        self._open = 0
        self._lock = threading.RLock()

    def _start(self) -> Any:
        from rich.console import Console
        from rich.errors import LiveError

        console = Console(file=self.stream) if self.stream is not None else Console(stderr=True)
        progress = rich_bar(console, "detail")
        try:
            progress.start()
        except LiveError:
            return None
        return progress

    def opened(self, task):
        with self._lock:
            if self._open == 0:
                self._progress = self._start()
            self._open += 1
            if self._progress is None:
                return self._plain.opened(task)
            task.handle = self._progress.add_task("  " * task.depth + task.description, total=task.total,
                                                  completed=task.completed, detail=task.detail)

    def updated(self, task):
        if self._progress is None or task.handle is None:
            return self._plain.updated(task)
        self._progress.update(task.handle, total=task.total, completed=task.completed, detail=task.detail)

    def closed(self, task, ok):
        with self._lock:
            if self._progress is None or task.handle is None:
                self._plain.closed(task, ok)
            else:
                if task.depth == 0 or not ok:
                    what = "done in" if ok else "stopped after"
                    self._progress.console.print(f"{task.line()} ({what} {time.perf_counter() - task.t0:.1f} s)",
                                                 highlight=False, markup=False)
                self._progress.remove_task(task.handle)
            self._open -= 1
            if self._open == 0 and self._progress is not None:
                self._progress.stop()
                self._progress = None

    def note(self, text):
        if self._progress is None:
            return self._plain.note(text)
        self._progress.console.print(text, highlight=False, markup=False)


def resolve_mode(mode: Optional[str] = None, stream: Optional[IO[str]] = None) -> str:
    """``rich``, ``plain`` or ``off`` for ``mode`` (None: ``$RFTBENCH_PROGRESS``, else ``auto``)."""
    mode = mode or os.environ.get(ENV) or "auto"
    if mode not in MODES:
        from .errors import ConfigError

        raise ConfigError(f"progress mode must be one of {', '.join(MODES)} (the {ENV} environment variable or "
                          f"train.progress), got {mode!r}.")
    if mode == "auto":
        target = stream or sys.stderr
        return "rich" if getattr(target, "isatty", lambda: False)() else "plain"
    return mode


class ProgressService:
    """Where :func:`task` and :func:`note` show (see the module docstring for ``mode``)."""

    def __init__(self, mode: Optional[str] = None, stream: Optional[IO[str]] = None,
                 min_interval_s: float = DEFAULT_INTERVAL_S):
        self.mode = resolve_mode(mode, stream)
        backends = {"off": _Silent, "plain": _Plain, "rich": _Rich}
        self.backend = _Silent() if self.mode == "off" else backends[self.mode](stream, min_interval_s)
        self._local = threading.local()  # the innermost open task of each thread

    @contextmanager
    def task(self, description: str, total: Optional[int] = None, *, unit: str = "",
             detail: str = "") -> Iterator[Task]:
        """A task nested in this thread's innermost open one; closed (shown done, or stopped when an
        exception leaves it) at the end of the ``with`` block."""
        parent = getattr(self._local, "top", None)
        t = Task(self, description, total, unit, detail, parent)
        self.backend.opened(t)
        self._local.top = t
        ok = False
        try:
            yield t
            ok = True
        finally:
            self._local.top = parent
            self.backend.closed(t, ok)

    def note(self, text: str) -> None:
        """One line (never rate-limited)."""
        self.backend.note(text)


_service: Optional[ProgressService] = None
_service_lock = threading.Lock()


def current() -> ProgressService:
    """The process's service (built from ``$RFTBENCH_PROGRESS`` the first time it is needed)."""
    global _service
    with _service_lock:
        if _service is None:
            _service = ProgressService()
        return _service


def configure(mode: Optional[str] = None, stream: Optional[IO[str]] = None,
              min_interval_s: float = DEFAULT_INTERVAL_S) -> Optional[ProgressService]:
    """Replace the process's service (``mode="off"``: silent); returns the previous one, which
    :func:`restore` puts back."""
    global _service
    with _service_lock:
        previous, _service = _service, ProgressService(mode, stream, min_interval_s)
    return previous


def restore(service: Optional[ProgressService]) -> None:
    """Put back a service :func:`configure` returned (None: build it from the environment again)."""
    global _service
    with _service_lock:
        _service = service


def for_mode(mode: str) -> ProgressService:
    """The service for a config's display mode (``train.progress``): the process's own for ``auto``
    or when it already shows that way, else one of that mode (``off``: silent) on stderr."""
    svc = current()
    return svc if mode == "auto" or resolve_mode(mode) == svc.mode else ProgressService(mode)


def task(description: str, total: Optional[int] = None, *, unit: str = "", detail: str = ""):
    """:meth:`ProgressService.task` on :func:`current`."""
    return current().task(description, total, unit=unit, detail=detail)


def note(text: str) -> None:
    """One line on :func:`current` (never rate-limited)."""
    current().note(text)


def announce(text: str) -> None:
    """:func:`note` for signal handlers, shown also when progress is ``off``: falls back to a bare
    write on stderr, and never raises (a handler that runs while the stream is being written must
    not break the stop it records)."""
    try:
        svc = current()
        if svc.mode == "off":  # a quiet run still hears that its signal was received
            raise RuntimeError("silent service")
        svc.note(f"{time.strftime('%H:%M:%S')} {text}" if svc.mode == "rich" else text)
    except Exception:  # noqa: BLE001 - see the docstring
        try:
            sys.stderr.write(text + "\n")
            sys.stderr.flush()
        except Exception:  # noqa: BLE001
            pass
