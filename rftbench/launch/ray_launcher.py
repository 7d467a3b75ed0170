"""The ``ray`` launcher: one Ray task per call, with ``cpus_per_run`` CPUs and ``gpus_per_run``
GPUs each (``pip install 'rftbench[ray]'``). ``ray_address`` joins a running cluster (checked
within seconds before Ray is asked); without it, a local ``ray.init()`` (or the one already up).
"""
from __future__ import annotations

import socket
from typing import Callable, Sequence
from urllib.parse import urlparse

from ..errors import LauncherError
from . import LaunchOptions, Outcome, call_in_worker, require_extra


def check_address(address: str, timeout_s: float = 3.0) -> None:
    """Raise :class:`LauncherError` unless something listens at the Ray ``address`` (host:port or
    ray://host:port) within ``timeout_s``; ``auto`` is left to Ray."""
    if address in ("auto", "local"):
        return
    parsed = urlparse(address if "://" in address else f"ray://{address}")
    host, port = parsed.hostname, parsed.port or (10001 if address.startswith("ray://") else 6379)
    if not host:
        raise LauncherError(f"Ray address {address!r} is not host:port or ray://host:port.")
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as exc:
        raise LauncherError(f"the Ray cluster at {address} did not answer within {timeout_s:g} s ({exc}). Start it "
                            f"(`ray start --head` on that machine), fix --ray-address, or leave it out to start "
                            f"a local Ray instance.") from None


def ensure_ray(options: LaunchOptions):
    ray = require_extra("ray", "ray")
    if not ray.is_initialized():
        if options.ray_address:
            check_address(options.ray_address)
            ray.init(address=options.ray_address, log_to_driver=False)
        else:
            ray.init(log_to_driver=False)
    return ray


def launch_ray(fn: Callable, args_list: Sequence[tuple], options: LaunchOptions) -> list[Outcome]:
    ray = ensure_ray(options)
    task = ray.remote(num_cpus=options.cpus_per_run, num_gpus=options.gpus_per_run, max_retries=0)(call_in_worker)
    refs = [task.remote(fn, tuple(a), options) for a in args_list]
    out = []
    for ref in refs:
        try:
            out.append(Outcome(value=ray.get(ref)))
        except Exception as exc:  # noqa: BLE001 - a failed task or a dead worker fails alone
            msg = str(exc).strip().splitlines()
            out.append(Outcome(error=f"ray task: {type(exc).__name__}: {msg[-1] if msg else ''}"))
    return out
