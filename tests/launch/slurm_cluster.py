"""A real single-node SLURM cluster on this machine for the slow launcher tests.

munged, slurmctld and slurmd (and, with ``accounting=True``, MariaDB and slurmdbd) are Debian's
``slurm-wlm`` / ``slurmdbd`` / ``munge`` / ``mariadb-server`` daemons started in a temporary
folder with their own ports, config, state and logs; clients find the cluster through
``SLURM_CONF``. Every daemon is stopped by the PID it wrote. :func:`unavailable` says why the
cluster cannot be started here (missing packages, not root), so a fixture can skip with it.

SLURM's clients talk to slurmdbd through munge's default socket whatever slurm.conf says, so
with accounting the default socket path is linked to ours while the cluster is up (and only when
nothing else is there).
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Optional

DAEMONS = ("munged", "slurmctld", "slurmd")
ACCOUNTING = ("mariadbd", "mariadb-install-db", "slurmdbd", "sacctmgr")
DEFAULT_MUNGE_SOCKET = Path("/run/munge/munge.socket.2")
MUNGE_KEY = Path("/etc/munge/munge.key")


def unavailable(accounting: bool = False) -> Optional[str]:
    """Why a cluster cannot be started here, or None."""
    missing = [d for d in DAEMONS + (ACCOUNTING if accounting else ()) if shutil.which(d) is None
               and not Path("/usr/sbin", d).exists()]
    if missing:
        return f"SLURM test cluster: {', '.join(missing)} not installed (apt-get install slurm-wlm slurmdbd munge mariadb-server)"
    if os.geteuid() != 0:
        return "SLURM test cluster: the daemons run as root here (SlurmUser=root); run the tests as root"
    if not MUNGE_KEY.exists():
        return f"SLURM test cluster: no munge key at {MUNGE_KEY} (the munge package creates it)"
    if accounting and DEFAULT_MUNGE_SOCKET.exists():
        return f"SLURM test cluster: {DEFAULT_MUNGE_SOCKET} belongs to another munged; accounting needs that path"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _slurm_conf(root: Path, ports: dict, accounting: bool, cpus: int, mem_mb: int) -> str:
    acct = (f"AccountingStorageType=accounting_storage/slurmdbd\nAccountingStorageHost=127.0.0.1\n"
            f"AccountingStoragePort={ports['dbd']}\nJobAcctGatherType=jobacct_gather/linux\n" if accounting else
            "AccountingStorageType=accounting_storage/none\nJobAcctGatherType=jobacct_gather/none\n")
    host = socket.gethostname()
    return (f"ClusterName=rftbench\nSlurmctldHost={host}(127.0.0.1)\nSlurmUser=root\nSlurmdUser=root\n"
            f"SlurmctldPort={ports['ctld']}\nSlurmdPort={ports['slurmd']}\nAuthType=auth/munge\n"
            # a requeued job waits cred_expire + 1 s before it may start again (default 120 s)
            f"AuthInfo=cred_expire=10,socket={root}/munge.sock\nCredType=cred/munge\nStateSaveLocation={root}/state\n"
            f"SlurmdSpoolDir={root}/spool\nSlurmctldPidFile={root}/slurmctld.pid\nSlurmdPidFile={root}/slurmd.pid\n"
            f"SlurmctldLogFile={root}/log/slurmctld.log\nSlurmdLogFile={root}/log/slurmd.log\n"
            "ProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\nSchedulerType=sched/backfill\n"
            "SelectType=select/cons_tres\nSelectTypeParameters=CR_Core_Memory\nReturnToService=2\nMpiDefault=none\n"
            "JobCompType=jobcomp/none\nKillWait=10\nMinJobAge=600\nInactiveLimit=0\nOverTimeLimit=0\n"
            "SchedulerParameters=bf_interval=1,sched_min_interval=100000\nMessageTimeout=20\n"
            f"{acct}NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem_mb} State=UNKNOWN\n"
            f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP\n")


class SlurmCluster:
    """One node (this machine, ``cpus`` CPUs and ``mem_mb`` MB to schedule) under a temporary
    ``root``; :meth:`start` brings the daemons up and waits until the node is idle."""

    def __init__(self, root: Path, accounting: bool = False, cpus: int = 2, mem_mb: int = 8000):
        self.root, self.accounting, self.cpus, self.mem_mb = Path(root), accounting, cpus, mem_mb
        self.ports = {k: free_port() for k in ("ctld", "slurmd", "dbd", "db")}
        self.conf = self.root / "slurm.conf"
        self._pidfiles: list[Path] = []
        self._linked_socket = False

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}

    def _run(self, *cmd: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, env={**os.environ, **self.env}, capture_output=True, text=True, timeout=timeout,
                              check=True)

    def _daemon(self, pidfile: Path, *cmd: str) -> None:
        self._pidfiles.append(pidfile)
        self._run(*cmd)
        _wait(lambda: pidfile.exists() and pidfile.read_text().strip(), 30, f"{cmd[0]} wrote no {pidfile}")

    def start(self) -> "SlurmCluster":
        r = self.root
        for d in ("state", "spool", "log", "db"):
            (r / d).mkdir(parents=True, exist_ok=True)
        key = r / "munge.key"
        shutil.copy(MUNGE_KEY, key)
        key.chmod(0o600)
        self._daemon(r / "munged.pid", "munged", f"--key-file={key}", f"--socket={r}/munge.sock",
                     f"--pid-file={r}/munged.pid", f"--log-file={r}/log/munged.log", f"--seed-file={r}/munge.seed",
                     "--force", "--num-threads=4")
        self.conf.write_text(_slurm_conf(r, self.ports, self.accounting, self.cpus, self.mem_mb))
        if self.accounting:
            self._start_accounting()
        self._daemon(r / "slurmctld.pid", "slurmctld")
        self._daemon(r / "slurmd.pid", "slurmd")
        _wait(lambda: self.node_state() in ("idle", "mixed", "allocated"), 60,
              f"the SLURM node did not come up (logs in {r}/log)")
        return self

    def _start_accounting(self) -> None:
        r = self.root
        self._run("mariadb-install-db", f"--datadir={r}/db", "--user=root", "--auth-root-authentication-method=socket",
                  timeout=120)
        pid = r / "mariadb.pid"
        self._pidfiles.append(pid)
        subprocess.Popen(["mariadbd", f"--datadir={r}/db", f"--socket={r}/mysql.sock", f"--port={self.ports['db']}",
                          "--bind-address=127.0.0.1", "--user=root", f"--pid-file={pid}",
                          f"--log-error={r}/log/mariadb.log", "--innodb-buffer-pool-size=64M"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        _wait(lambda: (r / "mysql.sock").exists(), 60, f"MariaDB did not start (see {r}/log/mariadb.log)")
        grants = "; ".join(f"CREATE USER 'slurm'@'{h}' IDENTIFIED BY 'slurm'; GRANT ALL ON slurm_acct_db.* TO "
                           f"'slurm'@'{h}'" for h in ("127.0.0.1", "localhost"))
        self._run("mariadb", f"--socket={r}/mysql.sock", "-uroot", "-e", grants + "; FLUSH PRIVILEGES;")
        dbd = r / "slurmdbd.conf"  # slurmdbd reads it beside SLURM_CONF; SLURM wants it private
        dbd.write_text(f"AuthType=auth/munge\nAuthInfo=socket={r}/munge.sock\nDbdHost=localhost\nDbdAddr=127.0.0.1\n"
                       f"DbdPort={self.ports['dbd']}\nSlurmUser=root\nPidFile={r}/slurmdbd.pid\n"
                       f"LogFile={r}/log/slurmdbd.log\nStorageType=accounting_storage/mysql\nStorageHost=127.0.0.1\n"
                       f"StoragePort={self.ports['db']}\nStorageUser=slurm\nStoragePass=slurm\nStorageLoc=slurm_acct_db\n")
        dbd.chmod(0o600)
        DEFAULT_MUNGE_SOCKET.parent.mkdir(parents=True, exist_ok=True)
        DEFAULT_MUNGE_SOCKET.symlink_to(r / "munge.sock")
        self._linked_socket = True
        self._daemon(r / "slurmdbd.pid", "slurmdbd")
        _wait(lambda: self._try("sacctmgr", "-i", "add", "cluster", "rftbench"), 60,
              f"slurmdbd did not answer (see {r}/log/slurmdbd.log)")

    def _try(self, *cmd: str) -> bool:
        try:
            self._run(*cmd, timeout=20)
            return True
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            return False

    def node_state(self) -> str:
        try:
            return self._run("sinfo", "-h", "-o", "%T", timeout=20).stdout.strip().rstrip("*")
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            return ""

    def squeue(self) -> list[tuple[str, str]]:
        """(job id, state) of every job SLURM still lists."""
        out = self._run("squeue", "-h", "-o", "%i %T", timeout=20).stdout.split("\n")
        return [tuple(line.split()[:2]) for line in out if line.strip()]

    def step_pids(self) -> list[int]:
        """The processes started for this cluster's jobs (slurmstepd and what it runs): those
        whose environment names this cluster's SLURM_CONF."""
        mark = f"SLURM_CONF={self.conf}\0".encode()
        out = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) != os.getpid():
                try:
                    if mark in (entry / "environ").read_bytes() + b"\0":
                        out.append(int(entry.name))
                except OSError:
                    continue
        return out

    def stop(self) -> None:
        """Stop every daemon this cluster started (newest first), by the PID it wrote."""
        for pidfile in reversed(self._pidfiles):
            _kill_pidfile(pidfile)
        for pid in self.step_pids():  # slurmstepd outlives slurmd and ignores SIGTERM
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self._linked_socket and DEFAULT_MUNGE_SOCKET.is_symlink():
            DEFAULT_MUNGE_SOCKET.unlink()


def _kill_pidfile(pidfile: Path, grace_s: float = 10) -> None:
    try:
        pid = int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    end = time.monotonic() + grace_s
    while time.monotonic() < end and _alive(pid):
        time.sleep(0.1)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie of ours counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def _wait(cond, timeout_s: float, message: str) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.25)
    raise RuntimeError(message)
