"""The local launcher: each call in its own child (a call that dies or raises fails alone, the
others finish), a worker imports what its calls imported (so its next children find it loaded),
and a worker that holds a second thread spawns its calls instead of forking them."""
from __future__ import annotations

import os
import signal
import sys
import types

import pytest

from rftbench.launch import LaunchOptions, launch


def act(i: int) -> int:
    """Call ``i``: 1 SIGKILLs its own process, 2 raises, others return their pid."""
    if i == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    if i == 2:
        raise ValueError("call 2 fails on purpose")
    return os.getpid()


def seen_then_import(name: str) -> bool:
    """Whether module ``name`` was loaded when the call began; imports it (and leaves one module
    in sys.modules that cannot be imported by name, as a plugin file loaded by path does)."""
    seen = name in sys.modules
    __import__(name)
    sys.modules["rftbench_test_not_importable_by_name"] = types.ModuleType("rftbench_test_not_importable_by_name")
    return seen


def modules_of(names: tuple[str, ...]) -> list[bool]:
    return [n in sys.modules for n in names]


@pytest.mark.slow
def test_a_call_that_dies_or_raises_fails_alone():
    out = launch(act, [(0,), (1,), (2,), (3,), (4,)], LaunchOptions(workers=2, threads=0))
    assert [o.ok for o in out] == [True, False, False, True, True]
    assert "killed by SIGKILL" in out[1].error
    assert out[2].error == "ValueError: call 2 fails on purpose"
    pids = [o.value for o in out if o.ok]
    assert len(set(pids)) == 3 and os.getpid() not in pids  # every call in a process of its own


@pytest.mark.slow
def test_a_worker_imports_what_its_calls_imported():
    name = "wave"  # a standard-library module nothing here imports
    assert name not in sys.modules
    out = launch(seen_then_import, [(name,)] * 3, LaunchOptions(workers=1, threads=0))
    assert [o.value for o in out] == [False, True, True]


@pytest.mark.slow
def test_a_worker_with_a_second_thread_spawns_its_calls():
    name = "colorsys"  # preloaded by the worker; a forked child has it, a spawned one does not
    forked = launch(modules_of, [((name,),)], LaunchOptions(workers=1, threads=0, preload=(name,)))
    assert forked[0].value == [True]
    spawned = launch(modules_of, [((name,),)], LaunchOptions(workers=1, threads=0,
                                                              preload=(name, "background_thread")))
    assert spawned[0].ok and spawned[0].value == [False]
