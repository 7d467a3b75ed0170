"""The ``local`` launcher: each call in its own ``python`` subprocess, at most ``workers`` at once.

A :class:`concurrent.futures.ThreadPoolExecutor` with ``workers`` threads starts the
subprocesses (``python -m rftbench.launch.child IN OUT``: the pickled call in, the pickled
outcome out), so a call that dies (SIGKILL, out of memory) fails alone and the pool goes on.
"""
from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

from . import LaunchOptions, Outcome


def _run_one(fn: Callable, args: tuple, options: LaunchOptions, tmp: Path, i: int) -> Outcome:
    src, dst = tmp / f"call{i}.pkl", tmp / f"outcome{i}.pkl"
    with open(src, "wb") as f:
        pickle.dump((fn, args, options), f)
    env = {**os.environ, **options.env, "OMP_NUM_THREADS": str(options.threads or 1)}
    proc = subprocess.run([sys.executable, "-m", "rftbench.launch.child", str(src), str(dst)], env=env,
                          cwd=options.cwd, stdin=subprocess.DEVNULL)
    if dst.is_file():
        with open(dst, "rb") as f:
            return pickle.load(f)
    if proc.returncode < 0:
        why = f"killed by {signal.Signals(-proc.returncode).name}"
    else:
        why = f"exited with status {proc.returncode}"
    return Outcome(error=f"worker process {why} before it returned")


def launch_local(fn: Callable, args_list: Sequence[tuple], options: LaunchOptions) -> list[Outcome]:
    with tempfile.TemporaryDirectory(prefix="rftbench-local-") as d, \
            ThreadPoolExecutor(max_workers=max(1, options.workers)) as pool:
        futures = [pool.submit(_run_one, fn, tuple(a), options, Path(d), i) for i, a in enumerate(args_list)]
        return [f.result() for f in futures]
