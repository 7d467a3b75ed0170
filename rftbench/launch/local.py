"""The ``local`` launcher: ``workers`` worker processes on this machine, each call in a child of one.

A :class:`concurrent.futures.ProcessPoolExecutor` with ``workers`` processes (spawned, so they
start clean) imports ``options.preload`` once per worker; each call then runs in a child forked
from its worker that sends its :class:`Outcome` back through a pipe. So a call that dies
(SIGKILL, out of memory) fails alone and the pool goes on. (A pool whose workers ran the calls
themselves, or ``max_tasks_per_child=1`` under a forkserver, would not: one worker dying breaks
the whole pool, and every pending and running call fails with ``BrokenProcessPool``.)

No call pays Python's and torch's start-up again, nor the lazy imports of the run path: a child
reports the modules it imported, and its worker imports them before forking the next child
(about 1,200 modules, 2-5 s of CPU, for a grid point: the MLflow SQL store, scikit-learn's
datasets, ``torch.export`` for the MLflow model). Before a fork the worker freezes its objects
(:func:`gc.freeze`), so the child's garbage collector does not copy their pages.

Fork safety: a worker only imports. It runs no torch op (so no OpenMP thread pool, which GNU
libgomp cannot carry across a fork, and no CUDA context, which a forked child cannot use) and
holds no open database connection; its only other threads are native ones with fork handlers
(OpenBLAS, jemalloc), as in any process that forks torch's DataLoader workers. Should a worker
ever hold a second Python thread, its calls are spawned instead of forked. Why not a pool over
the ``forkserver`` context, whose server preloads the imports once for all workers: the server
is one per process, started with the environment, ``sys.path`` and preload list of its first
user; a spawned pool starts clean at every launch, and on an idle machine both cost one import
of wall time (spawned workers import side by side).
"""
from __future__ import annotations

import gc
import importlib
import multiprocessing as mp
import signal
import sys
import threading
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Sequence

from .options import LaunchOptions, Outcome, call_in_worker

_SKIP = ("__main__", "__mp_main__")


def _preload(options: LaunchOptions) -> None:
    import os

    os.environ.update(options.env)
    for name in options.preload:
        importlib.import_module(name)


def _import_quietly(names: Sequence[str]) -> None:
    """Import ``names`` in this worker, skipping what is not importable by name (a plugin file)."""
    for name in names:
        if name in sys.modules or name in _SKIP:
            continue
        try:
            importlib.import_module(name)
        except (Exception, SystemExit):  # noqa: BLE001 - only a warm-up: the next child imports what it needs
            continue


def _child(conn, fn: Callable, args: tuple, options: LaunchOptions) -> None:
    before = set(sys.modules)
    try:
        out = Outcome(value=call_in_worker(fn, args, options))
    except BaseException as exc:  # noqa: BLE001 - every failure becomes this call's outcome
        import traceback

        traceback.print_exc()
        out = Outcome(error=f"{type(exc).__name__}: {exc}")
    imported = [name for name, mod in list(sys.modules.items()) if name not in before and mod is not None]
    conn.send((out, imported))
    conn.close()


def _run_forked(fn: Callable, args: tuple, options: LaunchOptions) -> Outcome:
    """In a pool worker: run the call in a forked child (spawned while this worker holds other
    threads); its death is this call's error. Afterwards import what the child imported."""
    ctx = mp.get_context("fork" if threading.active_count() == 1 else "spawn")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(send, fn, args, options))
    gc.freeze()  # the child's collector leaves the worker's objects alone: fewer pages copied
    proc.start()
    send.close()
    try:
        out, imported = recv.recv()
    except EOFError:
        out, imported = None, []
    proc.join()
    _import_quietly(imported)
    if out is not None:
        return out
    code = proc.exitcode or 0
    why = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited with status {code}"
    return Outcome(error=f"worker process {why} before it returned")


def launch_local(fn: Callable, args_list: Sequence[tuple], options: LaunchOptions) -> list[Outcome]:
    with ProcessPoolExecutor(max_workers=max(1, options.workers), mp_context=mp.get_context("spawn"),
                             initializer=_preload, initargs=(options,)) as pool:
        futures = [pool.submit(_run_forked, fn, tuple(a), options) for a in args_list]
        return [f.result() for f in futures]
