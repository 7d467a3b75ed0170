"""A real `mlflow server` on a free loopback port, started and killed by tests (SQLite backend,
artifacts proxied into a local folder)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, root, port):
        self.root, self.port, self.proc = root, port, None
        self.uri = f"http://127.0.0.1:{port}"

    def start(self):
        cmd = [os.path.join(os.path.dirname(sys.executable), "mlflow"), "server", "--backend-store-uri",
               f"sqlite:///{self.root / 'server.db'}", "--artifacts-destination", str(self.root / "artifacts"),
               "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(self.uri + "/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError("mlflow server did not start")

    def kill(self):
        os.killpg(self.proc.pid, signal.SIGKILL)  # the server and its worker
        self.proc.wait()

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.kill()
