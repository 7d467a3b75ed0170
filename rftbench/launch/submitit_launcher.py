"""The ``submitit`` launcher: one SLURM job array for all calls (``pip install 'rftbench[submitit]'``).

``partition``, ``gpus_per_run``, ``cpus_per_run``, ``time_min``, ``mem_gb`` and
``array_parallelism`` (how many array tasks run at once) become the array's SLURM options;
logs and pickles go under ``folder``. ``cluster="local"`` runs the same path on submitit's
LocalExecutor (real subprocesses, same pickling), which is how it is tested here.
"""
from __future__ import annotations

from typing import Callable, Sequence

from . import LaunchOptions, Outcome, call_in_worker, require_extra


def make_executor(options: LaunchOptions):
    """A submitit ``AutoExecutor`` configured from ``options``."""
    submitit = require_extra("submitit", "submitit")
    executor = submitit.AutoExecutor(folder=f"{options.folder}/%j", cluster=options.cluster)
    params = {"timeout_min": options.time_min, "cpus_per_task": options.cpus_per_run, "name": "rftbench",
              "slurm_array_parallelism": options.array_parallelism}
    if options.gpus_per_run:
        params["gpus_per_node"] = int(options.gpus_per_run)
    if options.mem_gb:
        params["mem_gb"] = options.mem_gb
    if options.partition:
        params["slurm_partition"] = options.partition
    executor.update_parameters(**params)
    return executor


def launch_submitit(fn: Callable, args_list: Sequence[tuple], options: LaunchOptions) -> list[Outcome]:
    executor = make_executor(options)
    n = len(args_list)
    jobs = executor.map_array(call_in_worker, [fn] * n, [tuple(a) for a in args_list], [options] * n)
    out = []
    for job in jobs:
        try:
            out.append(Outcome(value=job.result()))
        except Exception as exc:  # noqa: BLE001 - a failed or killed array task fails alone
            msg = str(exc).strip().splitlines()
            out.append(Outcome(error=f"submitit job {job.job_id}: {type(exc).__name__}: "
                                     f"{msg[-1] if msg else ''} (logs: {job.paths.stderr})"))
    return out
