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

from typing import Callable, Optional, Sequence

from ..errors import LauncherError
from .options import LAUNCHERS, LaunchOptions, Outcome, call_in_worker, prepare_worker, require_extra


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
