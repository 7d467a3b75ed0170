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

``rftbench sweep --launcher`` uses them for grid points (:mod:`rftbench.gridrun`); ``rftbench
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

    def with_defaults(self) -> "LaunchOptions":
        """A copy whose ``env`` also carries this process's MLflow URI and rftbench paths, and
        whose ``cwd`` is this directory (workers then write to the same store)."""
        keep = ("MLFLOW_TRACKING_URI", "RFTBENCH_CACHE", "RFTBENCH_DATA", "PYTHONPATH", "HF_HOME", "TORCH_HOME",
                "HF_HUB_OFFLINE")
        env = {k: os.environ[k] for k in keep if k in os.environ}
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


__all__ = ["LAUNCHERS", "LaunchOptions", "Outcome", "launch", "require_extra", "call_in_worker", "prepare_worker"]
