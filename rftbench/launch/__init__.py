"""Launchers: run a list of calls ``fn(*args)`` somewhere else, on existing engines.

Every launcher takes one picklable function (defined at module level) and a list of argument
tuples, and returns one :class:`Outcome` per call, in order: the call's return value, or the
error that stopped it (an exception, a killed worker). One failing call never stops the others.

- ``local``: N worker processes on this machine (``workers``, a ProcessPoolExecutor); each call
  runs in a child forked from a worker, so a call that dies (SIGKILL, OOM) fails alone, and a
  worker imports what its calls imported, so later calls start warm; ``threads`` torch threads
  per call (default 1).
- ``submitit``: SLURM job arrays through submitit (``pip install 'rftbench[submitit]'``);
  ``cluster="local"`` runs the same pickling path on submitit's LocalExecutor (what the tests use).
- ``ray``: Ray tasks with ``cpus_per_run`` / ``gpus_per_run`` resources on the cluster at
  ``ray_address`` (``pip install 'rftbench[ray]'``); no address: a local ``ray.init()``.

``rftbench train --nproc N`` is not a launcher in this sense: it runs one run on N processes
through torchrun's own launcher (:mod:`.torchrun`).

``rftbench sweep --launcher`` uses them for grid points (:mod:`rftbench.experiments.gridrun`); ``rftbench
tune --workers N`` starts its Optuna workers through ``local``, and any launcher takes them the
same way: ``launch(run_tune_worker, [(config, options, i) for i in range(n)],
LaunchOptions(launcher="ray"))``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Optional, Sequence

from ..errors import LauncherError

LAUNCHERS = ("local", "submitit", "ray")
EXTRAS = {"submitit": "submitit", "ray": "ray"}


@dataclass
class LaunchOptions:
    """Where and how calls run. ``env``: environment variables every call sees (the MLflow
    store, the cache), set in the worker before the call; ``cwd``: its working directory."""

    launcher: str = "local"
    workers: int = 2
    threads: int = 1
    cpus_per_run: int = 1
    gpus_per_run: float = 0
    partition: Optional[str] = None
    time_min: int = 60
    array_parallelism: int = 16
    mem_gb: Optional[float] = None
    folder: str = "rftbench-launch"
    cluster: Optional[str] = None  # submitit: None (auto: SLURM if there), "slurm", "local"
    ray_address: Optional[str] = None
    env: dict[str, str] = field(default_factory=dict)
    cwd: Optional[str] = None
    preload: tuple[str, ...] = ()  # local: modules each worker imports once, before its calls
    slurm_requeue: bool = True  # submitit: a preempted or timed-out task is requeued and resumes
    slurm_signal_delay_s: Optional[int] = None  # SIGUSR2 this long before the time limit (None: min(90, limit/4))
    slurm_max_requeues: int = 3  # time-outs a task may be requeued after
    unknown_timeout_s: float = 120.0  # how long a task the engine no longer reports is waited for

    def with_defaults(self) -> "LaunchOptions":
        """A copy whose ``env`` also carries this process's MLflow URI, cache paths and every
        ``RFTBENCH_*`` variable (a remote worker does not inherit this environment), and
        whose ``cwd`` is this directory (workers then write to the same store)."""
        keep = ("MLFLOW_TRACKING_URI", "RFTBENCH_CACHE", "RFTBENCH_DATA", "PYTHONPATH", "HF_HOME", "TORCH_HOME",
                "HF_HUB_OFFLINE")
        env = {k: v for k, v in os.environ.items() if k in keep or k.startswith("RFTBENCH_")}
        return replace(self, env={**env, **self.env}, cwd=self.cwd or os.getcwd())


@dataclass
class Outcome:
    """What one call gave: ``value`` when ``error`` is None, else ``error`` says what went wrong."""

    value: Any = None
    error: Optional[str] = None

    @property
    def ok(self) -> bool:
        return self.error is None


def require_extra(launcher: str, module: str) -> Any:
    """Import ``module`` for ``launcher`` or raise :class:`LauncherError` with the pip command."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise LauncherError(f"the {launcher!r} launcher needs the {module} package, which is not installed: "
                            f"pip install 'rftbench[{EXTRAS[launcher]}]' (or pip install {module}).") from None


def prepare_worker(options: LaunchOptions) -> None:
    """In a worker: apply ``options.env`` and ``cwd``, and ``options.threads`` torch threads."""
    os.environ.update(options.env)
    if options.cwd:
        os.chdir(options.cwd)
    if options.threads:
        import torch

        torch.set_num_threads(options.threads)


def call_in_worker(fn: Callable, args: tuple, options: LaunchOptions) -> Any:
    """What a submitit job or Ray task runs: :func:`prepare_worker`, then ``fn(*args)``."""
    prepare_worker(options)
    return fn(*args)


def launch(fn: Callable, args_list: Sequence[tuple], options: Optional[LaunchOptions] = None) -> list[Outcome]:
    """Run ``fn(*args)`` for every ``args`` in ``args_list`` with ``options.launcher``; one
    :class:`Outcome` per call, in order."""
    options = (options or LaunchOptions()).with_defaults()
    if options.launcher not in LAUNCHERS:
        raise LauncherError(f"unknown launcher {options.launcher!r}; use one of {', '.join(LAUNCHERS)}.")
    if not args_list:
        return []
    if options.launcher == "local":
        from .local import launch_local

        return launch_local(fn, args_list, options)
    if options.launcher == "submitit":
        from .submitit_launcher import launch_submitit

        return launch_submitit(fn, args_list, options)
    from .ray_launcher import launch_ray

    return launch_ray(fn, args_list, options)


def busy_cpus(cpus: Sequence[int], sample_s: float = 0.25) -> Optional[float]:
    """How many of ``cpus`` (CPU ids) other work keeps busy: the sum over them of the busy share
    of each (1 - idle / total time in Linux's ``/proc/stat``) over ``sample_s`` seconds, less
    what this process's own threads used meanwhile; None where ``/proc/stat`` cannot be read."""
    import time

    def ticks() -> dict[int, tuple[int, int]]:
        out = {}
        with open("/proc/stat") as f:
            for line in f:
                name, *fields = line.split()
                if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in wanted:
                    values = [int(v) for v in fields[:8]]
                    out[int(name[3:])] = (values[3] + values[4], sum(values))  # idle + iowait, all
        return out

    wanted = set(cpus)
    try:
        before, own0 = ticks(), time.process_time()
        time.sleep(sample_s)
        after, own = ticks(), time.process_time() - own0  # this process's threads do not count
    except (OSError, ValueError, IndexError):
        return None
    busy = -own / sample_s
    for cpu, (idle1, total1) in after.items():
        idle0, total0 = before.get(cpu, (idle1, total1))
        if total1 > total0:
            busy += 1.0 - (idle1 - idle0) / (total1 - total0)
    return max(0.0, busy)


def threads_rule(cores: int, *, processes: int = 1, busy: Optional[float] = None) -> int:
    """rftbench's default intra-op thread count for one process: its share of ``cores`` among the
    ``processes`` processes of one run (e.g. torchrun's ranks on this machine), less the cores
    ``busy`` with other work (rounded), at least 1. Multi-threaded CPU kernels wait for their
    slowest thread at every operation, so a thread that shares its core with another process
    stalls all of them (a 2-epoch digits training on 2 cores: ~1.7 s idle, 15-24 s beside one
    busy process with 2 threads, 2.6 s with one)."""
    share = max(1, cores // max(1, processes))
    return max(1, share - (round(busy) if busy else 0))


def set_torch_threads(requested: Optional[int] = None) -> tuple[int, str]:
    """Set torch's intra-op threads for this process and return ``(count, why)``.

    ``requested`` > 0 (``train.threads``) is set as it is; 0 or None applies :func:`threads_rule`
    to this process's CPUs (its affinity), torchrun's ``LOCAL_WORLD_SIZE`` and the CPUs busy
    right now (:func:`busy_cpus`, sampled only when there is something to lower), and never
    raises the count above what torch already uses (``OMP_NUM_THREADS``, a launcher's
    ``threads`` or an earlier call stay the ceiling). The rule is applied once, where a process
    starts its training: work that starts later beside it is not seen.
    """
    import torch

    if requested:
        torch.set_num_threads(int(requested))
        return int(requested), "train.threads"
    current = torch.get_num_threads()
    if current <= 1:
        return current, "already one thread"
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    busy = busy_cpus(cpus)
    n = min(current, threads_rule(len(cpus), processes=processes, busy=busy))
    why = (f"rule: {len(cpus)} cores / {processes} process(es), "
           f"{'unknown' if busy is None else f'{busy:.1f}'} busy, at most torch's {current}")
    if n != current:
        torch.set_num_threads(n)
    return n, why


__all__ = ["LAUNCHERS", "LaunchOptions", "Outcome", "launch", "require_extra", "call_in_worker", "prepare_worker",
           "busy_cpus", "set_torch_threads", "threads_rule"]
