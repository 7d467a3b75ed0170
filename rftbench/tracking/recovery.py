"""Interrupted training runs: which MLflow runs are stale, and whether a run may be resumed.

A process killed with SIGKILL (the OOM killer, a pre-empted node, ``kill -9``) cannot end its
MLflow run, which then stays RUNNING. So every training run carries the tags
``rftbench.host``, ``rftbench.pid``, ``rftbench.proc_start`` (the process start time, to detect
a reused pid) and a heartbeat ``rftbench.heartbeat`` (unix seconds, refreshed on every logging
step and epoch end). A RUNNING run is *stale* when its process is gone (same host: the pid is
not alive, a zombie, or now another process) or its heartbeat is older than ``older_than_s``
(any host). :func:`mark_stale_runs` (``rftbench runs mark-stale``) ends stale runs as KILLED
with an ``rftbench.error`` tag that says how to resume -- or FAILED with the error a DDP rank
recorded in the run directory before it exited (:func:`rank_failures`; whoever ends a run its
rank 0 could not end reads these first, see :func:`end_unfinished`); ``rftbench train CONFIG --resume RUN_ID``
reopens such a run (RUNNING again) and ends it FINISHED, or FAILED if it crashes again.
Runs without these tags (e.g. a tuner's parent run) are never judged.
"""
from __future__ import annotations

import os
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, Optional

from ..errors import RftbenchError
from .store import client_for

HOST_TAG, PID_TAG, START_TAG = "rftbench.host", "rftbench.pid", "rftbench.proc_start"
HEARTBEAT_TAG = "rftbench.heartbeat"
ProcessState = Literal["alive", "dead", "unknown"]


def _proc_stat(pid: int) -> Optional[tuple[str, str]]:
    """(state letter, start time in clock ticks) of ``pid`` from /proc (Linux), else None."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rfind(")") + 2:].split()  # after "pid (comm) "
    return (fields[0], fields[19]) if len(fields) > 19 else None


def process_tags() -> dict[str, Any]:
    """The tags that identify this training process (and a fresh heartbeat)."""
    stat = _proc_stat(os.getpid())
    return {HOST_TAG: socket.gethostname(), PID_TAG: os.getpid(), START_TAG: stat[1] if stat else "",
            HEARTBEAT_TAG: int(time.time())}


def heartbeat_tags() -> dict[str, Any]:
    return {HEARTBEAT_TAG: int(time.time())}


def process_state(host: str, pid: int, proc_start: str = "") -> ProcessState:
    """Whether the process that tagged a run still runs: ``unknown`` for another host."""
    if host != socket.gethostname():
        return "unknown"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return "dead"
    except PermissionError:
        pass  # exists, owned by someone else
    stat = _proc_stat(pid)
    if stat is not None:
        state, start = stat
        if state == "Z" or (proc_start and start != proc_start):
            return "dead"  # a zombie, or the pid now belongs to another process
    return "alive"


@dataclass
class StaleRun:
    run_id: str
    run_name: str
    host: str
    pid: int
    heartbeat_age_s: float
    reason: str
    run_dir: Optional[str] = None
    status: str = "KILLED"  # what mark-stale ends it as: FAILED when a rank recorded an error of its own


def failure_file(folder: str | Path, rank: int) -> Path:
    """Where DDP rank ``rank`` records the error it failed with (in a run directory, or in the
    ``rftbench train --nproc`` launcher's folder)."""
    return Path(folder) / f"rank{rank}.failed"


def rank_failures(*folders: str | Path | None) -> dict[int, str]:
    """{rank: its error} for every DDP rank that recorded one (``rank<R>.failed``) in any of
    ``folders`` (None skipped), earliest record first (the first is the cause; later ones are
    ranks that stopped with it); a rank recorded in several folders counts once."""
    found: dict[int, tuple[float, str]] = {}
    for folder in folders:
        if folder is None or not Path(folder).is_dir():
            continue
        for path in Path(folder).glob("rank*.failed"):
            try:
                rank, when, text = int(path.name[4:-7]), path.stat().st_mtime, path.read_text(errors="replace")
            except (OSError, ValueError):
                continue
            if rank not in found or when < found[rank][0]:
                found[rank] = (when, text.strip())
    return {r: t for r, (_, t) in sorted(found.items(), key=lambda kv: (kv[1][0], kv[0]))}


def describe_rank_failures(failures: dict[int, str]) -> str:
    """``"rank 1: ValueError: ...; rank 0: ..."`` (at most 1,500 characters)."""
    return "; ".join(f"rank {r}: {t}" for r, t in failures.items())[:1500]


def _run_process(run) -> tuple[str, int, str, float]:
    tags = run.data.tags
    heartbeat = float(tags.get(HEARTBEAT_TAG) or (run.info.start_time or 0) / 1000)
    return tags.get(HOST_TAG, ""), int(tags.get(PID_TAG, -1)), tags.get(START_TAG, ""), heartbeat


def find_stale_runs(experiment: str, *, uri: str | None = None, older_than_s: float = 3600.0) -> list[StaleRun]:
    """RUNNING training runs of ``experiment`` whose process is gone or silent for ``older_than_s``."""
    client = client_for(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise RftbenchError(f"no MLflow experiment {experiment!r} in {client.tracking_uri}.")
    now = time.time()
    stale = []
    for run in client.search_runs([exp.experiment_id], filter_string="attributes.status = 'RUNNING'",
                                  max_results=10000):
        if PID_TAG not in run.data.tags:
            continue
        host, pid, start, heartbeat = _run_process(run)
        state = process_state(host, pid, start)
        age = now - heartbeat
        if state == "dead":
            reason = f"process {pid} on {host} is gone"
        elif state == "unknown" and age > older_than_s:
            reason = f"no heartbeat from {host} (pid {pid}) for {age:.0f} s"
        else:
            continue
        rdir = run_dir_of(run)
        status = "FAILED" if rank_failures(rdir) else "KILLED"
        stale.append(StaleRun(run.info.run_id, run.info.run_name, host, pid, age, reason, rdir, status))
    return stale


def mark_stale_runs(experiment: str, *, uri: str | None = None, older_than_s: float = 3600.0,
                    dry_run: bool = False) -> list[StaleRun]:
    """End every stale run of ``experiment`` (at its last heartbeat) as KILLED, or FAILED with
    the error a DDP rank recorded in its run directory (:func:`end_unfinished`); return them."""
    stale = find_stale_runs(experiment, uri=uri, older_than_s=older_than_s)
    if not dry_run:
        for s in stale:
            s.status = end_unfinished(s.run_id, f"stale RUNNING run: {s.reason}", folders=(s.run_dir,), uri=uri,
                                      end_ms=int((time.time() - s.heartbeat_age_s) * 1000))
    return stale


def end_unfinished(run_id: str, reason: str, *, folders: tuple[str | Path | None, ...] = (), uri: str | None = None,
                   end_ms: int | None = None) -> str:
    """End run ``run_id``, which its process could not end (``reason`` says why it is being
    ended here): FAILED with the errors that DDP ranks recorded in ``folders`` (the run directory,
    the launcher's folder; :func:`rank_failures`) when any did, else KILLED (every rank died
    without a word: resumable). Returns the status it was given."""
    failures = rank_failures(*folders)
    if not failures:
        end_killed(run_id, reason, uri=uri, end_ms=end_ms)
        return "KILLED"
    client = client_for(uri)
    client.set_tag(run_id, "rftbench.error", f"RankFailedError: {describe_rank_failures(failures)} ({reason}). "
                                             f"Fix the cause, then resume it with `rftbench train CONFIG --resume "
                                             f"{run_id}`.")
    client.set_terminated(run_id, status="FAILED", end_time=end_ms)
    return "FAILED"


def end_killed(run_id: str, reason: str, *, uri: str | None = None, end_ms: int | None = None) -> None:
    """End run ``run_id`` KILLED (at ``end_ms``, unix milliseconds; default now) with an
    ``rftbench.error`` tag: ``reason`` and how to resume it."""
    client = client_for(uri)
    client.set_tag(run_id, "rftbench.error", f"{reason}. Resume it with `rftbench train CONFIG --resume {run_id}`.")
    client.set_terminated(run_id, status="KILLED", end_time=end_ms)


def stale_runs_to_json(stale: list[StaleRun]) -> list[dict[str, Any]]:
    return [asdict(s) for s in stale]


def exit_with_launcher(interval_s: float = 0.5) -> bool:
    """Under ``torchrun``: SIGKILL this rank as soon as its launcher (the parent process) is gone.

    torchrun starts every rank in a session of its own, so a SIGKILL of the launcher's process
    group (``kill -9 -PGID``, a job step killed that way) would leave the ranks training on,
    unsupervised: they would finish (or collide with) the run while it is being resumed. Dying
    the same way keeps a killed job what it looks like: a RUNNING run that ``--resume`` continues
    from its last checkpoint. A daemon thread checks the parent every ``interval_s`` seconds;
    returns whether it was started (only under torchrun, ``TORCHELASTIC_RUN_ID`` set)."""
    import signal
    import sys
    import threading

    if "TORCHELASTIC_RUN_ID" not in os.environ:
        return False
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval_s)
        print(f"rftbench: rank {os.environ.get('RANK', '?')}: the torchrun launcher (pid {parent}) is gone; "
              f"this rank stops too (resume the run with `rftbench train --resume RUN_ID`).",
              file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="rftbench-launcher-watch", daemon=True).start()
    return True


def check_resumable(run_id: str, *, uri: str | None = None):
    """The MLflow run ``run_id``, after checking that no live process on this host still trains it."""
    client = client_for(uri)
    try:
        run = client.get_run(run_id)
    except Exception:
        raise RftbenchError(f"no MLflow run {run_id!r} in {client.tracking_uri}; check the run id "
                            f"(`mlflow ui`) and MLFLOW_TRACKING_URI.") from None
    if run.info.status == "RUNNING" and PID_TAG in run.data.tags:
        host, pid, start, _ = _run_process(run)
        if process_state(host, pid, start) == "alive":
            raise RftbenchError(f"run {run_id} is still being trained by process {pid} on this host; "
                                f"stop that process before resuming the run.")
    return run


def run_dir_of(run) -> Optional[str]:
    """The checkpoint directory recorded on a run (tag ``rftbench.run_dir``), if any."""
    return run.data.tags.get("rftbench.run_dir")


def config_of_run(run_id: str, overrides: list[str] | tuple[str, ...] = (), *, uri: str | None = None):
    """The config a run was started with (its ``config.yaml`` artifact, which holds its
    ``--set`` overrides), with ``overrides`` applied on top: for ``rftbench train --resume RUN_ID``."""
    import tempfile

    from ..config import load_config

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    run = check_resumable(run_id, uri=uri)
    local = Path(run_dir_of(run) or "") / "tracking-artifacts" / "config.yaml"
    with tempfile.TemporaryDirectory() as d:
        try:
            path = client_for(uri).download_artifacts(run_id, "config.yaml", d)
        except Exception:  # noqa: BLE001 - not uploaded (yet): the run directory's copy
            if not run_dir_of(run) or not local.is_file():
                raise RftbenchError(f"run {run_id} has no config.yaml artifact and no local copy ({local}); "
                                    f"resume it with `rftbench train CONFIG --resume {run_id}`.") from None
            path = str(local)
        return load_config(path, list(overrides))
