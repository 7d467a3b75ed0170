"""What every launcher shares: :class:`LaunchOptions`, the :class:`Outcome` of one call, and
what a worker runs (:func:`call_in_worker`). The launchers import it; :func:`rftbench.launch.launch`
picks one."""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Optional

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


def trained_run_id(value: Any) -> Optional[str]:
    """The MLflow run a grid call trained (whole or in part), for the engine to tag; None when the
    call only found the run done, failed, or claimed by another sweep (an engine on which it did
    not train must not claim it)."""
    return getattr(value, "run_id", None) if getattr(value, "trained", False) else None
