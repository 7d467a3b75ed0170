"""A real two-node Ray cluster on loopback addresses for the slow launcher tests.

The head runs on 127.0.0.2 and a second node joins from 127.0.0.3 (``ray start``, one CPU each),
both with token authentication (``RAY_AUTH_MODE=token``, the token in a file of the cluster's own,
``RAY_AUTH_TOKEN_PATH``), as Ray 2.60 does by default once a token exists. Ray's temporary folder
is short (Ray's socket paths must fit in 107 characters) and its own; :meth:`RayCluster.stop`
kills every process whose command line names it, by PID, instead of ``ray stop`` (which would
stop every Ray on the machine).
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

HEAD_IP, WORKER_IP = "127.0.0.2", "127.0.0.3"


def unavailable() -> Optional[str]:
    """Why the cluster cannot be started here, or None."""
    if not sys.platform.startswith("linux"):
        return "Ray test cluster: loopback addresses other than 127.0.0.1 need Linux"
    try:
        import ray  # noqa: F401
    except ImportError:
        return "Ray test cluster: ray is not installed (pip install 'rftbench[ray]')"
    for ip in (HEAD_IP, WORKER_IP):
        try:
            with socket.socket() as s:
                s.bind((ip, 0))
        except OSError as exc:
            return f"Ray test cluster: cannot bind {ip} ({exc})"
    return None


def _ray_cli() -> str:
    return str(Path(sys.executable).with_name("ray"))


class RayCluster:
    """The head and one more node; :attr:`address` is what ``--ray-address`` takes and
    :attr:`env` what a driver needs (the auth mode and token file)."""

    def __init__(self, cpus_per_node: int = 1):
        self.cpus = cpus_per_node
        self.temp_dir = Path(tempfile.mkdtemp(prefix="rftray", dir="/tmp"))
        self.token = self.temp_dir / "auth_token"
        self.token.write_text(secrets.token_hex(32))
        self.port = _free_port(HEAD_IP)
        self.address = f"{HEAD_IP}:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.token)}

    def _start(self, *args: str) -> None:
        cmd = [_ray_cli(), "start", *args, f"--num-cpus={self.cpus}", f"--temp-dir={self.temp_dir}",
               "--disable-usage-stats"]
        env = {**os.environ, **self.env}
        env.pop("RAY_ADDRESS", None)
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
        if res.returncode != 0:
            self.stop()
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}")

    def start(self) -> "RayCluster":
        self._start("--head", f"--node-ip-address={HEAD_IP}", f"--port={self.port}", "--include-dashboard=false")
        self._start(f"--address={self.address}", f"--node-ip-address={WORKER_IP}")
        return self

    def pids(self) -> list[int]:
        """Every process whose command line names this cluster's temporary folder."""
        mark = str(self.temp_dir).encode()
        out = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) != os.getpid():
                try:
                    if mark in (entry / "cmdline").read_bytes():
                        out.append(int(entry.name))
                except OSError:
                    continue
        return out

    def stop(self) -> None:
        for sig, wait_s in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            pids = self.pids()
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            end = time.monotonic() + wait_s
            while pids and time.monotonic() < end and self.pids():
                time.sleep(0.2)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _free_port(ip: str) -> int:
    """A free port below Ray's default worker range (10002-19999) and apart from its fixed ones."""
    for port in range(30000 + os.getpid() % 5000, 40000):
        with socket.socket() as s:
            try:
                s.bind((ip, port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port for the Ray head")
