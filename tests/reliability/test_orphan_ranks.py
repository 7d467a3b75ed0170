"""torchrun starts every rank in a session of its own: a SIGKILL of the launcher's process group
leaves the ranks running. rftbench's ranks stop with their launcher, so a killed DDP job stays a
RUNNING run that `--resume` continues (instead of ranks finishing it behind the user's back)."""
import os
import signal
import subprocess
import sys
import time

import pytest

RANK = """
import os, time
from rftbench.tracking.recovery import exit_with_launcher
assert exit_with_launcher(interval_s=0.1)
print(os.getpid(), flush=True)
time.sleep(600)
"""

LAUNCHER = """
import subprocess, sys, time
rank = subprocess.Popen([sys.executable, "-c", sys.argv[1]], start_new_session=True)  # as torchrun does
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.slow
def test_a_rank_dies_with_its_killed_launcher():
    env = {**os.environ, "TORCHELASTIC_RUN_ID": "test"}
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER, RANK], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
    rank_pid = int(launcher.stdout.readline())
    assert _alive(rank_pid)
    os.killpg(launcher.pid, signal.SIGKILL)  # the launcher's group: the rank is not in it
    launcher.wait()
    deadline = time.time() + 30
    while _alive(rank_pid) and time.time() < deadline:
        time.sleep(0.1)
    alive = _alive(rank_pid)
    if alive:
        os.kill(rank_pid, signal.SIGKILL)
    assert not alive
    assert "the torchrun launcher" in launcher.stderr.read()


def test_outside_torchrun_nothing_is_watched(monkeypatch):
    from rftbench.tracking.recovery import exit_with_launcher

    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    assert exit_with_launcher() is False
