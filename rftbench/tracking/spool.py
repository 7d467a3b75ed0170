"""Tracking that never costs training: an on-disk spool of MLflow calls, flushed in the background.

A training run's metrics, tags, params, artifacts, MLflow model and dataset inputs are appended
to ``<run_dir>/tracking-spool.jsonl`` (one JSON line per call, one ``write`` each; a line torn by
a crash is cut when the spool is continued, and a line that is not JSON is skipped) and a
background thread sends them to the store in batches, in order, with a short timeout per call.
The spool is bounded (``tracking.spool_max_mb``; see :class:`SpoolingTracker`).
What was sent is recorded in ``tracking-spool.state.json`` (written atomically), so nothing is
sent twice by rftbench and nothing is lost when the store goes away: training continues, the
spool grows, and it is flushed when the store answers again -- at the latest when the run ends,
or with ``rftbench runs sync RUN_DIR``. With ``tracking.offline_ok`` a store that is down at
start is not an error: the run gets a local id and ``runs sync`` creates it in MLflow later.
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

from ..atomic import atomic_write_bytes, atomic_write_text, disk_full_error, is_disk_full
from ..errors import RftbenchError, TrackingError

log = logging.getLogger(__name__)

SPOOL_NAME, STATE_NAME, ARTIFACT_DIR = "tracking-spool.jsonl", "tracking-spool.state.json", "tracking-artifacts"
# rftbench's own calls to an http store: fail fast, the spool retries (the user's settings win)
HTTP_ENV = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "5", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
            "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
MAX_READ = 4 << 20  # bytes of spool read per flush round
DEFAULT_MAX_BYTES = 256 << 20  # tracking.spool_max_mb's default
COMPACT_AT = 8 << 20  # sent bytes that make the flusher drop the sent part (at most max_bytes / 4)
DROPPED_TAG = "rftbench.spool_dropped"


def fast_fail_http() -> None:
    for k, v in HTTP_ENV.items():
        os.environ.setdefault(k, v)


class Spool:
    """The files of one run's spool in ``run_dir``: the JSON-lines log and the sync state."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)
        self.path, self.state_path = self.run_dir / SPOOL_NAME, self.run_dir / STATE_NAME

    def exists(self) -> bool:
        return self.state_path.is_file()

    def size(self) -> int:
        """Bytes in the log (0 when there is none)."""
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def read_state(self) -> dict[str, Any]:
        """The sync state; an offset past the end of the log (a compaction cut short by a crash,
        see :meth:`keep_tail`) means the whole log is unsent."""
        try:
            state = json.loads(self.state_path.read_text())
        except FileNotFoundError:
            raise TrackingError(f"{self.run_dir} holds no tracking spool ({STATE_NAME}); is it a run "
                                f"directory of `rftbench train`?") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise TrackingError(f"{self.state_path} is corrupt ({exc}); delete it to resend the whole spool "
                                f"(the store ignores metrics it already has).") from None
        if int(state.get("offset", 0)) > self.size():
            state["offset"] = 0
        return state

    def write_state(self, state: Mapping[str, Any]) -> None:
        atomic_write_text(self.state_path, json.dumps(state, indent=1))

    @staticmethod
    def encode(entries: list[dict[str, Any]]) -> bytes:
        return "".join(json.dumps(e, default=str) + "\n" for e in entries).encode()

    def append(self, data: bytes) -> None:
        """Append encoded entries (:meth:`encode`) in one ``write``."""
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)
        except OSError as exc:
            if is_disk_full(exc):
                raise disk_full_error(self.path, len(data)) from None
            raise
        finally:
            os.close(fd)

    def repair(self) -> int:
        """Cut a torn last line (a process killed in the middle of a ``write``) so that the next
        entry starts on a line of its own; returns the bytes cut. The torn entry was never
        complete, so it was never sent."""
        size = self.size()
        if size == 0:
            return 0
        with open(self.path, "r+b") as f:
            end = size
            while end > 0:
                start = max(0, end - 65536)
                f.seek(start)
                nl = f.read(end - start).rfind(b"\n")
                if nl >= 0:
                    end = start + nl + 1
                    break
                end = start
            if end < size:
                f.truncate(end)
        return size - end

    def keep_tail(self, offset: int) -> int:
        """Replace the log by its bytes after ``offset`` (the sent part dropped), atomically;
        returns the new size. The caller then writes offset 0 to the state: until it does, the
        old offset lies past the new end, which :meth:`read_state` reads as 0."""
        with open(self.path, "rb") as f:
            f.seek(offset)
            tail = f.read()
        if len(tail) >= offset:
            raise ValueError("keep_tail needs a sent part longer than the unsent one")
        atomic_write_bytes(self.path, tail)
        return len(tail)

    def pending(self, offset: int) -> list[tuple[int, dict[str, Any]]]:
        """Complete entries after byte ``offset``, each with the offset just past it (a line that
        is not JSON becomes a ``corrupt`` entry, skipped with a warning: it must not stop every
        later entry)."""
        try:
            with open(self.path, "rb") as f:
                f.seek(offset)
                chunk = f.read(MAX_READ)
        except FileNotFoundError:
            return []
        out, pos = [], offset
        for line in chunk.split(b"\n")[:-1]:  # the piece after the last newline is incomplete
            pos += len(line) + 1
            if not line.strip():
                continue
            try:
                out.append((pos, json.loads(line)))
            except (json.JSONDecodeError, UnicodeDecodeError):
                out.append((pos, {"t": "corrupt"}))  # sent as nothing: the offset moves past it
                log.warning("skipping a corrupt line of %s at byte %d: %r", self.path, pos - len(line) - 1, line[:200])
        return out


def _batches(entries: list[tuple[int, dict[str, Any]]]) -> Iterator[tuple[int, str, Any]]:
    """Group consecutive metrics/params/tags entries into MLflow-sized batches, in order."""
    from mlflow.entities import Metric, Param, RunTag

    group: dict[str, list] = {"metrics": [], "params": [], "tags": []}
    end = None
    for pos, e in entries:
        kind = e["t"]
        if kind in group:
            if kind == "metrics":
                group["metrics"] += [Metric(k, float(v), int(ts), int(step)) for k, v, ts, step in e["items"]]
            elif kind == "params":
                group["params"] += [Param(k, str(v)) for k, v in e["items"].items()]
            else:
                group["tags"] += [RunTag(k, str(v)) for k, v in e["items"].items()]
            end = pos
            if len(group["metrics"]) >= 900 or len(group["params"]) >= 90 or len(group["tags"]) >= 90:
                yield end, "batch", group
                group, end = {"metrics": [], "params": [], "tags": []}, None
            continue
        if end is not None:
            yield end, "batch", group
            group, end = {"metrics": [], "params": [], "tags": []}, None
        yield pos, kind, e
    if end is not None:
        yield end, "batch", group


def _send(client: Any, state: dict[str, Any], kind: str, item: Any) -> None:
    """One MLflow call for one batch or entry (creating the run of an offline spool first). A
    local file or folder that is gone (sent and removed before a crash let the offset move) is
    skipped with a warning."""
    run_id = state.get("run_id")
    if kind == "create":
        from .store import get_or_create_experiment

        exp_id = get_or_create_experiment(client, item["experiment"])
        run = client.create_run(exp_id, run_name=item["run_name"], tags=item["tags"])
        state["run_id"] = run.info.run_id
    elif kind == "batch":
        for i in range(0, max(len(item["params"]), 1), 100):
            client.log_batch(run_id, metrics=item["metrics"] if i == 0 else [],
                             params=item["params"][i:i + 100], tags=item["tags"] if i == 0 else [])
    elif kind in ("artifact", "artifacts"):
        _send_files(client, run_id, item)
    elif kind == "inputs":
        client.log_inputs(run_id, datasets=_dataset_inputs(item["datasets"]))
    elif kind == "end":
        client.set_terminated(run_id, status=item["status"], end_time=item.get("time_ms"))


def _send_files(client: Any, run_id: str, item: dict[str, Any]) -> None:
    """An ``artifact`` (one file) or ``artifacts`` (a folder: removed once sent when it is the
    spool's own copy, ``remove_after``)."""
    path = Path(item["path"])
    if not path.exists():
        log.warning("%s is gone: not sent to MLflow run %s", path, run_id)
    elif item["t"] == "artifact":
        client.log_artifact(run_id, str(path), item.get("artifact_path"))
    else:
        client.log_artifacts(run_id, str(path), item.get("artifact_path"))
        if item.get("remove_after"):
            shutil.rmtree(path, ignore_errors=True)


def _dataset_inputs(datasets: list[dict[str, Any]]) -> list[Any]:
    """MLflow ``DatasetInput`` entities back from their ``to_dictionary()`` form."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    return [DatasetInput(Dataset(**d["dataset"]), tags=[InputTag(k, v) for k, v in d["tags"].items()])
            for d in datasets]


def flush_spool(spool: Spool, client: Any, state: dict[str, Any]) -> int:
    """Send everything after ``state['offset']``; advance and persist it after each call.
    Returns the entries' bytes sent; an unreachable store raises (the offset stays put)."""
    sent = 0
    while True:
        entries = spool.pending(int(state["offset"]))
        if not entries:
            return sent
        for end, kind, item in _batches(entries):
            _send(client, state, kind, item)
            sent += end - int(state["offset"])
            state["offset"] = end
            spool.write_state(state)


@dataclass
class SyncResult:
    run_id: str
    bytes_sent: int
    run_dir: str


def sync_run_dir(run_dir: str | Path, *, uri: Optional[str] = None) -> SyncResult:
    """Upload what a run's spool still holds (``rftbench runs sync RUN_DIR``)."""
    from mlflow.tracking import MlflowClient

    from .store import ensure_store

    spool = Spool(run_dir)
    state = spool.read_state()
    uri = uri or state["uri"]
    fast_fail_http()
    ensure_store(uri)
    client = MlflowClient(tracking_uri=uri)
    try:
        sent = flush_spool(spool, client, state)
    except RftbenchError:
        raise
    except Exception as exc:  # noqa: BLE001 - the store's own error, said in one line
        raise TrackingError(f"syncing {spool.path} to {uri} failed: {type(exc).__name__}: "
                            f"{str(exc).splitlines()[0][:300] if str(exc) else ''}. Run `rftbench runs sync "
                            f"{run_dir}` again when the store answers.") from None
    return SyncResult(state.get("run_id") or "", sent, str(run_dir))


class SpoolingTracker:
    """The :class:`rftbench.tracking.store.Tracker` interface over a :class:`Spool`: every call is
    appended to disk at once and sent by a background thread, so a slow or lost store never
    blocks training. Calls made before :meth:`attach` (the run directory is not known yet) wait
    in memory. ``run_id`` is the MLflow run id, or a local ``offline-...`` id until synced.

    The spool is bounded by ``max_bytes`` (``tracking.spool_max_mb``): once everything in it was
    sent, the sent part is dropped (compaction); when it is full because the store is behind,
    calls marked ``per_step`` (the ``train_step/*`` metrics and heartbeats) are dropped, with one
    warning, until there is room again; epoch metrics, params, tags and artifacts are always kept.
    The number dropped is recorded in the tag ``rftbench.spool_dropped``."""

    def __init__(self, client: Any, run_id: str, uri: str, *, state: dict[str, Any], interval_s: float = 1.0,
                 max_bytes: int = DEFAULT_MAX_BYTES):
        self.client, self.run_id, self.uri, self.interval_s = client, run_id, uri, interval_s
        self._state, self._early = state, []
        self.spool: Optional[Spool] = None
        self._wake, self._stop = threading.Event(), threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.down_since: Optional[float] = None
        self.last_error = ""
        self.max_bytes, self.compact_at = int(max_bytes), min(int(max_bytes) // 4, COMPACT_AT)
        self._lock = threading.Lock()  # appends (training thread) against compaction (flusher)
        self._size, self.dropped, self._shedding = 0, 0, False

    # --------------------------------------------------------------- the Tracker interface
    def log_params(self, params: Mapping[str, Any]) -> None:
        from .store import _param_str

        self._put({"t": "params", "items": {k: _param_str(v) for k, v in params.items()}})

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None, *, per_step: bool = False) -> None:
        ts = int(time.time() * 1000)
        items = [[k, float(v), ts, step or 0] for k, v in metrics.items()
                 if v is not None and not (isinstance(v, float) and math.isnan(v))]
        if items:
            self._put({"t": "metrics", "items": items}, per_step)

    def set_tags(self, tags: Mapping[str, Any], *, per_step: bool = False) -> None:
        self._put({"t": "tags", "items": {k: str(v) for k, v in tags.items()}}, per_step)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self._put({"t": "artifact", "path": str(Path(path).resolve()), "artifact_path": artifact_path})

    def log_artifacts(self, local_dir: str | Path, artifact_path: str | None = None) -> None:
        """A folder: copied into the spool (``tracking-artifacts/``) at once, removed once sent."""
        dest = self._own_path(artifact_path or Path(local_dir).name)
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(local_dir, dest)
        self._put({"t": "artifacts", "path": str(dest.resolve()), "artifact_path": artifact_path,
                   "remove_after": True})

    def log_inputs(self, datasets: list[Any]) -> None:
        """MLflow ``DatasetInput`` entities (``mlflow.entities``), sent with ``log_inputs``."""
        self._put({"t": "inputs", "datasets": [d.to_dictionary() for d in datasets]})

    def log_dict(self, obj: Any, name: str, artifact_path: str | None = None) -> None:
        self.log_text(json.dumps(obj, indent=2, default=str), name, artifact_path)

    def log_text(self, text: str, name: str, artifact_path: str | None = None) -> None:
        p = self._own_path(Path(artifact_path or "") / name)
        atomic_write_text(p, text)
        self.log_artifact(p, artifact_path)

    def _own_path(self, rel: str | Path) -> Path:
        if self.spool is None:
            raise TrackingError("an artifact logged before the run directory is known (SpoolingTracker.attach)")
        return self.spool.run_dir / ARTIFACT_DIR / rel

    # --------------------------------------------------------------- spool and flusher
    def _put(self, entry: dict[str, Any], per_step: bool = False) -> None:
        if self.spool is None:
            self._early.append(entry)
            return
        data = Spool.encode([entry])
        with self._lock:
            if per_step and self._size + len(data) > self.max_bytes:
                self._shed()
                return
            if self._shedding:  # room again: say how much is missing, on the run too
                data = self._end_shedding() + data
            self.spool.append(data)
            self._size += len(data)

    def _shed(self) -> None:
        self.dropped += 1
        if not self._shedding:
            self._shedding = True
            print(f"rftbench: the tracking spool {self.spool.path} is full (tracking.spool_max_mb = "
                  f"{self.max_bytes / 2**20:g}) while the store {self.uri} is behind; per-step metrics and "
                  f"heartbeats are dropped until it catches up (epoch metrics, params, tags and artifacts are "
                  f"kept). Training continues.", file=sys.stderr, flush=True)

    def _end_shedding(self) -> bytes:
        self._shedding = False
        print(f"rftbench: the tracking spool has room again; {self.dropped} per-step entries were dropped "
              f"in all (tag rftbench.spool_dropped).", file=sys.stderr, flush=True)
        return Spool.encode([{"t": "tags", "items": {DROPPED_TAG: str(self.dropped)}}])

    def attach(self, run_dir: str | Path) -> None:
        """Spool into ``run_dir`` from now on and start flushing. A spool already there (a killed
        run resumed) is continued: its torn last line, if any, is cut first."""
        spool = Spool(run_dir)
        spool.run_dir.mkdir(parents=True, exist_ok=True)
        if spool.exists():
            cut = spool.repair()
            if cut:
                log.warning("cut a torn last line (%d bytes) from %s", cut, spool.path)
            old = spool.read_state()
            self._state["offset"] = old.get("offset", 0)
            self._state["run_id"] = self._state.get("run_id") or old.get("run_id")
        spool.write_state(self._state)
        self.spool, self._size = spool, spool.size()
        if self._early:
            early, self._early = self._early, []
            for e in early:
                self._put(e)
        self._thread = threading.Thread(target=self._loop, name="rftbench-tracking-flush", daemon=True)
        self._thread.start()

    def _flush(self) -> bool:
        try:
            flush_spool(self.spool, self.client, self._state)
        except Exception as exc:  # noqa: BLE001 - any store failure: keep spooling, retry later
            if self.down_since is None:
                self.down_since = time.time()
                print(f"rftbench: the tracking store {self.uri} does not answer ({type(exc).__name__}); "
                      f"training continues, metrics are kept in {self.spool.path} and sent when it is back.",
                      file=sys.stderr, flush=True)
            self.last_error = f"{type(exc).__name__}: {str(exc)[:200]}"
            return False
        if self.down_since is not None:
            print(f"rftbench: the tracking store {self.uri} answers again; the spool is synced "
                  f"(it was unreachable for {time.time() - self.down_since:.0f} s).", file=sys.stderr, flush=True)
            self.down_since = None
        self._compact()
        return True

    def _compact(self) -> None:
        """Drop the sent part of the spool once it reaches ``compact_at`` bytes (and outweighs
        the unsent part): the tail is rewritten atomically, then the state's offset set to 0."""
        if int(self._state["offset"]) < self.compact_at:
            return
        with self._lock:
            offset = int(self._state["offset"])
            if self._size - offset >= offset:
                return
            try:
                self._size = self.spool.keep_tail(offset)
            except OSError as exc:  # e.g. a full disk: keep the spool as it is
                log.warning("could not compact %s: %s", self.spool.path, exc)
                return
            self._state["offset"] = 0
            self.spool.write_state(self._state)

    def _loop(self) -> None:
        delay = self.interval_s
        while not self._stop.is_set():
            self._wake.wait(delay)
            self._wake.clear()
            if self._stop.is_set():
                return
            delay = self.interval_s if self._flush() else min(max(delay * 2, 2.0), 30.0)

    def close(self, wait_s: float) -> bool:
        """Stop the flusher and send what is left, retrying for up to ``wait_s`` seconds.
        Returns whether everything was sent; if not, says how to send it later."""
        if self.spool is None:
            return True
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        deadline = time.time() + wait_s
        while not self._flush():
            if time.time() >= deadline:
                print(f"rftbench: the tracking store {self.uri} did not answer ({self.last_error}); the run's "
                      f"remaining tracking data is safe in {self.spool.path}. Send it with "
                      f"`rftbench runs sync {self.spool.run_dir}`.", file=sys.stderr, flush=True)
                return False
            time.sleep(min(2.0, max(0.0, deadline - time.time())))
        return True


def check_store(uri: str, offline_ok: bool = False) -> bool:
    """Whether the store at ``uri`` answers (within seconds); if not, a :class:`TrackingError`
    unless ``offline_ok`` (then False). Called before any model or data is loaded."""
    from .store import ensure_store

    fast_fail_http()
    try:
        ensure_store(uri)
        return True
    except TrackingError as exc:
        if not offline_ok:
            raise TrackingError(f"{exc} (Or set tracking.offline_ok: true to train now and send the "
                                f"run later with `rftbench runs sync RUN_DIR`.)") from None
        return False


def _open_client(uri: str, offline_ok: bool) -> tuple[Any, bool]:
    """(client, online): the store checked with a short timeout, unless ``offline_ok``."""
    from mlflow.tracking import MlflowClient

    from .store import ensure_store

    fast_fail_http()
    try:
        ensure_store(uri)
        return MlflowClient(tracking_uri=uri), True
    except TrackingError as exc:
        if not offline_ok:
            raise TrackingError(f"{exc} (Or set tracking.offline_ok: true to train now and send the "
                                f"run later with `rftbench runs sync RUN_DIR`.)") from None
        print(f"rftbench: {exc} tracking.offline_ok is set: the run is spooled locally; send it later with "
              f"`rftbench runs sync RUN_DIR`.", file=sys.stderr, flush=True)
        return MlflowClient(tracking_uri=uri), False


def _create_or_reopen(client: Any, online: bool, experiment: str, run_name: str, tags: dict[str, str],
                      run_id: Optional[str]) -> tuple[str, dict[str, Any]]:
    """The run id and initial spool state: a new run (tagged with this process at once), a
    reopened one, or (offline) a local id with the creation spooled."""
    from mlflow.entities import RunTag

    from .recovery import process_tags
    from .store import get_or_create_experiment

    tags = {**tags, **{k: str(v) for k, v in process_tags().items()}}
    state: dict[str, Any] = {"uri": client.tracking_uri, "offset": 0, "run_id": run_id}
    if run_id is not None:
        client.update_run(run_id, status="RUNNING")
        client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items() if k.startswith("rftbench.")])
        return run_id, state
    if online:
        exp_id = get_or_create_experiment(client, experiment)
        run = client.create_run(exp_id, run_name=run_name, tags=tags)
        state["run_id"] = run.info.run_id
        return run.info.run_id, state
    local = f"offline-{uuid.uuid4().hex[:16]}"
    state["local_id"], state["run_id"] = local, None
    state["early"] = [{"t": "create", "experiment": experiment, "run_name": run_name, "tags": tags}]
    return local, state


@contextmanager
def start_spooled_run(experiment: str, run_name: str, *, tags: Mapping[str, Any] | None = None,
                      uri: str | None = None, parent_run_id: str | None = None, run_id: str | None = None,
                      offline_ok: bool = False, sync_wait_s: float = 30.0,
                      max_bytes: int = DEFAULT_MAX_BYTES) -> Iterator[SpoolingTracker]:
    """Like :func:`rftbench.tracking.store.start_run`, through a :class:`SpoolingTracker` (call its
    ``attach(run_dir)`` once the run directory is known). The run is tagged with host, pid and a
    heartbeat when created; it ends FINISHED, FAILED or KILLED -- in the spool, sent with the rest.
    ``max_bytes``: the spool's bound (see :class:`SpoolingTracker`)."""
    from .store import default_tracking_uri

    uri = uri or default_tracking_uri()
    client, online = _open_client(uri, offline_ok)
    from .store import standard_tags

    all_tags = {**standard_tags(), "mlflow.runName": run_name, **{k: str(v) for k, v in (tags or {}).items()}}
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    rid, state = _create_or_reopen(client, online, experiment, run_name, all_tags, run_id)
    tracker = SpoolingTracker(client, rid, uri, state=state, max_bytes=max_bytes)
    tracker._early = state.pop("early", [])
    try:
        yield tracker
    except BaseException as exc:
        pruned = type(exc).__name__ == "TrialPruned"
        status = "KILLED" if pruned or isinstance(exc, KeyboardInterrupt) else "FAILED"
        _end(tracker, status, {"rftbench.pruned" if pruned else "rftbench.error": f"{type(exc).__name__}: {exc}"[:5000]},
             min(sync_wait_s, 10.0))
        raise
    _end(tracker, "FINISHED", {}, sync_wait_s)


def _end(tracker: SpoolingTracker, status: str, tags: dict[str, str], wait_s: float) -> None:
    if tracker.dropped:
        tags = {**tags, DROPPED_TAG: str(tracker.dropped)}
    try:
        if tags:
            tracker.set_tags(tags)
        tracker._put({"t": "end", "status": status, "time_ms": int(time.time() * 1000)})
        if tracker.spool is None:  # failed before the run directory was known: send directly
            state = tracker._state
            for e in tracker._early:
                kind = "batch" if e["t"] in ("metrics", "params", "tags") else e["t"]
                item = next(_batches([(0, e)]))[2] if kind == "batch" else e
                _send(tracker.client, state, kind, item)
            return
        tracker.close(wait_s)
    except Exception as exc:  # noqa: BLE001 - never hide the run's own error behind a tracking one
        log.warning("could not record the end of run %s: %s", tracker.run_id, exc)
