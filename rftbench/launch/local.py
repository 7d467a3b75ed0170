"""The ``local`` launcher: ``workers`` worker processes on this machine, each call in a child of one.

A :class:`concurrent.futures.ProcessPoolExecutor` with ``workers`` processes (spawned, so they
start clean) imports ``options.preload`` once per worker; each call then runs in a child forked
from its worker (cheap: the imports are shared) that sends its :class:`Outcome` back through a
pipe. So a call that dies (SIGKILL, out of memory) fails alone, the pool goes on, and no call
pays Python's and torch's start-up again.
"""
from __future__ import annotations

import importlib
import multiprocessing as mp
import signal
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Sequence

from . import LaunchOptions, Outcome, call_in_worker


def _preload(options: LaunchOptions) -> None:
    import os

    os.environ.update(options.env)
    for name in options.preload:
        importlib.import_module(name)


def _child(conn, fn: Callable, args: tuple, options: LaunchOptions) -> None:
    try:
        out = Outcome(value=call_in_worker(fn, args, options))
    except BaseException as exc:  # noqa: BLE001 - every failure becomes this call's outcome
        import traceback

        traceback.print_exc()
        out = Outcome(error=f"{type(exc).__name__}: {exc}")
    conn.send(out)
    conn.close()


def _run_forked(fn: Callable, args: tuple, options: LaunchOptions) -> Outcome:
    """In a pool worker: run the call in a forked child; its death is this call's error."""
    ctx = mp.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(send, fn, args, options))
    proc.start()
    send.close()
    try:
        out = recv.recv()
    except EOFError:
        out = None
    proc.join()
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
