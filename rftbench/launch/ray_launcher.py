"""The ``ray`` launcher: one Ray task per call, with ``cpus_per_run`` CPUs and ``gpus_per_run``
GPUs each (``pip install 'rftbench[ray]'``). ``ray_address`` joins a running cluster (checked
within seconds before Ray is asked); without it, a local ``ray.init()`` (or the one already up).
"""
from __future__ import annotations

import socket
from typing import Any, Callable, Sequence
from urllib.parse import urlparse

from ..errors import JobInterruptedError, LauncherError
from .options import LaunchOptions, Outcome, call_in_worker, require_extra, trained_run_id
from .messages import last_error_line


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


AUTH_HELP = ("Ray refused this process's token: set RAY_AUTH_MODE=token and the cluster's token (RAY_AUTH_TOKEN, "
             "or its file in RAY_AUTH_TOKEN_PATH, default ~/.ray/auth_token, as on the head), or start the cluster "
             "without token authentication (RAY_AUTH_MODE=disabled on every node). See "
             "https://docs.ray.io/en/latest/ray-security/token-auth.html")


def check_auth(address: str) -> None:
    """Raise :class:`LauncherError` at once when the cluster's GCS at ``address`` refuses this
    process's authentication (Ray itself retries for about 20 s, then raises ConnectionError)."""
    if address in ("auto", "local") or address.startswith("ray://"):
        return
    from ray._raylet import GcsClient  # the client ray.init builds first; no public probe exists
    from ray.exceptions import AuthenticationError

    try:
        GcsClient(address=address, cluster_id=None)
    except AuthenticationError as exc:
        raise LauncherError(f"the Ray cluster at {address} refused to connect: {str(exc).split('.')[0]}. "
                            f"{AUTH_HELP}") from None
    except Exception:  # noqa: BLE001 - anything else is left to ray.init, which says it better
        return


def ensure_ray(options: LaunchOptions):
    """Ray, initialised for ``options`` (joined to ``ray_address``, else local); every way Ray
    can refuse (address, token, version) is a :class:`LauncherError` that says what to set."""
    ray = require_extra("ray", "ray")
    if ray.is_initialized():
        return ray
    try:
        if options.ray_address:
            check_address(options.ray_address)
            check_auth(options.ray_address)
            ray.init(address=options.ray_address, log_to_driver=False)
        else:
            ray.init(log_to_driver=False)
    except LauncherError:
        raise
    except (ConnectionError, RuntimeError, ray.exceptions.RayError) as exc:
        where = f"the Ray cluster at {options.ray_address}" if options.ray_address else "a local Ray instance"
        text = str(exc).strip().splitlines()
        hint = AUTH_HELP if "auth" in str(exc).lower() or "token" in str(exc).lower() else (
            "Use the same Ray and Python versions as the cluster." if "version" in str(exc).lower() else
            "Check --ray-address (host:port of the head's GCS, or ray://host:10001).")
        raise LauncherError(f"could not connect to {where}: {type(exc).__name__}: "
                            f"{text[0] if text else ''} {hint}") from None
    return ray


def call_and_tag(fn: Callable, args: tuple, options: LaunchOptions) -> Any:
    """What a Ray task runs: :func:`call_in_worker`, then the node that ran it recorded on the
    run it trained (``rftbench.ray.node_ip``); an interrupted call becomes :class:`JobInterruptedError`."""
    try:
        value = call_in_worker(fn, args, options)
    except KeyboardInterrupt as exc:
        raise JobInterruptedError(str(exc) or type(exc).__name__) from None
    run_id = trained_run_id(value)
    if run_id:
        import ray

        from ..tracking.store import client_for

        client_for().set_tag(run_id, "rftbench.ray.node_ip", ray.util.get_node_ip_address())
    return value


def launch_ray(fn: Callable, args_list: Sequence[tuple], options: LaunchOptions) -> list[Outcome]:
    ray = ensure_ray(options)
    task = ray.remote(num_cpus=options.cpus_per_run, num_gpus=options.gpus_per_run, max_retries=0)(call_and_tag)
    refs = [task.remote(fn, tuple(a), options) for a in args_list]
    out = []
    for ref in refs:
        try:
            out.append(Outcome(value=ray.get(ref)))
        except Exception as exc:  # noqa: BLE001 - a failed task or a dead worker fails alone
            out.append(Outcome(error=f"ray task: {_ray_error_line(exc)}"))
    return out


def _ray_error_line(exc: BaseException) -> str:
    """The task's own last error line (a RayTaskError carries the remote traceback), else Ray's."""
    cause = getattr(exc, "cause", None)
    if cause is not None and not isinstance(cause, type(exc)):
        return f"{type(cause).__name__}: {str(cause).strip().splitlines()[-1] if str(cause).strip() else ''}"
    return last_error_line(str(exc)) or type(exc).__name__
