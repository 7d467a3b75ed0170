"""MLflow tracking: a SQLite-backed store in the working directory by default.

``MLFLOW_TRACKING_URI`` (or an explicit ``uri``) points at a tracking server instead.
Every run opened with :func:`start_run` ends FINISHED, FAILED (on an exception) or KILLED
(on Ctrl-C): a crashed run never stays RUNNING.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

warnings.filterwarnings("ignore", message=".*SQLAlchemy.*", category=DeprecationWarning)

import mlflow  # noqa: E402
from mlflow.entities import Metric, Param, RunTag  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

import logging  # noqa: E402

from ..errors import TrackingError  # noqa: E402
from ..paths import file_lock  # noqa: E402

DEFAULT_DB = "mlflow.db"
# MLflow announces table creation and migrations at INFO on every new store
for _name in ("mlflow.store.db.utils", "alembic.runtime.migration"):
    logging.getLogger(_name).setLevel(logging.WARNING)


def default_tracking_uri(workdir: str | Path | None = None) -> str:
    """``$MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<workdir>/mlflow.db``."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    root = Path(workdir or os.getcwd()).resolve()
    return f"sqlite:///{root / DEFAULT_DB}"


def _artifact_root(uri: str) -> str | None:
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        return (db.parent / "mlartifacts").resolve().as_uri()
    return None  # a server decides


_READY_STORES: set[str] = set()


def ensure_store(uri: str, *, timeout_s: float = 5.0) -> None:
    """Make the tracking store at ``uri`` usable before any run touches it, once per process.

    SQLite: the schema is created (and migrated) by one process at a time under a file lock
    beside the database, so any number of processes started at the same instant all succeed
    (MLflow alone lets them race on ``CREATE TABLE`` and alembic). Other SQL databases: schema
    creation is retried with back-off. A server (http/https) must answer ``/health`` within
    ``timeout_s`` or a :class:`TrackingError` says so at once.
    """
    if uri in _READY_STORES:
        return
    scheme = check_tracking_uri(uri)
    if scheme == "sqlite":
        db = Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None
        if db is not None:
            db.parent.mkdir(parents=True, exist_ok=True)
            with file_lock(db.with_name(db.name + ".lock")):
                _open_sql_store(uri)
    elif scheme in ("postgresql", "mysql", "mssql"):
        _open_sql_store(uri, attempts=8)
    elif scheme in ("http", "https"):
        _check_server(uri, timeout_s)
    _READY_STORES.add(uri)


KNOWN_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "http", "https", "file", "databricks")


def check_tracking_uri(uri: str) -> str:
    """The scheme of a tracking URI, after refusing one MLflow cannot open (before any run exists)."""
    if uri.startswith(("/", "./", "../", "~")):
        return "file"  # a local directory: MLflow's file store
    scheme = uri.split(":", 1)[0].split("+", 1)[0].lower() if ":" in uri else ""
    if scheme not in KNOWN_SCHEMES:
        raise TrackingError(f"tracking URI {uri!r} has {'scheme ' + repr(scheme) if scheme else 'no scheme'}; "
                            f"use one of {', '.join(s + '://' for s in KNOWN_SCHEMES)} (MLFLOW_TRACKING_URI), "
                            f"or unset it to log to ./{DEFAULT_DB}.")
    return scheme


def _open_sql_store(uri: str, attempts: int = 1) -> None:
    """Instantiate MLflow's SQL store (creates and migrates its tables), retrying on races."""
    import random
    import time

    from mlflow.tracking._tracking_service.utils import _get_store

    for attempt in range(attempts):
        try:
            _get_store(uri)
            return
        except Exception:  # noqa: BLE001 - a concurrent creator: wait and look again
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 + random.random() * (attempt + 1))


def _check_server(uri: str, timeout_s: float) -> None:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s) as resp:
            if resp.status == 200:
                return
            problem = f"answered HTTP {resp.status}"
    except (urllib.error.URLError, OSError) as exc:
        problem = f"did not answer within {timeout_s:g} s ({getattr(exc, 'reason', exc)})"
    raise TrackingError(f"the MLflow tracking server {uri} {problem}. Start it (mlflow server ...), fix "
                        f"MLFLOW_TRACKING_URI, or unset it to log to ./{DEFAULT_DB}.")


def client_for(uri: str | None = None) -> MlflowClient:
    uri = uri or default_tracking_uri()
    ensure_store(uri)
    return MlflowClient(tracking_uri=uri)


def get_or_create_experiment(client: MlflowClient, name: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    root = _artifact_root(client.tracking_uri)
    try:
        return client.create_experiment(name, artifact_location=f"{root}/{name}" if root else None)
    except mlflow.exceptions.MlflowException:  # created concurrently by another worker
        return client.get_experiment_by_name(name).experiment_id


class Tracker:
    """Logs into one MLflow run by id (no global state: several runs may be open at once)."""

    def __init__(self, client: MlflowClient, run_id: str):
        self.client, self.run_id = client, run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        items = [Param(k, _param_str(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i:i + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None, *, per_step: bool = False) -> None:
        """``per_step``: fine-grained metrics a bounded buffer may drop first (unused here)."""
        import time

        ts = int(time.time() * 1000)
        items = [Metric(k, float(v), ts, step or 0) for k, v in metrics.items()
                 if v is not None and not (isinstance(v, float) and math.isnan(v))]
        for i in range(0, len(items), 500):
            self.client.log_batch(self.run_id, metrics=items[i:i + 500])

    def set_tags(self, tags: Mapping[str, Any], *, per_step: bool = False) -> None:
        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_artifacts(self, local_dir: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifacts(self.run_id, str(local_dir), artifact_path)

    def log_inputs(self, datasets: list) -> None:
        """MLflow ``DatasetInput`` entities."""
        self.client.log_inputs(self.run_id, datasets=datasets)

    def log_dict(self, obj: Any, name: str, artifact_path: str | None = None) -> None:
        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / name
            p.write_text(json.dumps(obj, indent=2, default=str))
            self.log_artifact(p, artifact_path)

    def log_text(self, text: str, name: str, artifact_path: str | None = None) -> None:
        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / name
            p.write_text(text)
            self.log_artifact(p, artifact_path)


def _param_str(v: Any) -> str:
    s = json.dumps(v) if isinstance(v, (list, dict)) else str(v)
    return s[:6000]


_STANDARD_TAGS: dict[str, str] = {}


def standard_tags() -> dict[str, str]:
    """MLflow's standard run tags (``mlflow.user``, ``mlflow.source.name``/``type``, and
    ``mlflow.source.git.commit`` of the rftbench code when it is a git checkout), once per process."""
    if not _STANDARD_TAGS:
        import subprocess

        from mlflow.tracking.context.registry import resolve_tags

        _STANDARD_TAGS.update({k: str(v) for k, v in resolve_tags().items()})
        try:
            commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                                    text=True, timeout=10)
            if commit.returncode == 0 and commit.stdout.strip():
                _STANDARD_TAGS["mlflow.source.git.commit"] = commit.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return dict(_STANDARD_TAGS)


@contextmanager
def start_run(experiment: str, run_name: str, *, tags: Mapping[str, Any] | None = None,
              uri: str | None = None, parent_run_id: str | None = None,
              run_id: str | None = None) -> Iterator[Tracker]:
    """Open (or, with ``run_id``, reopen) an MLflow run; end it FINISHED/FAILED/KILLED."""
    client = client_for(uri)
    if run_id is None:
        exp_id = get_or_create_experiment(client, experiment)
        all_tags = {**standard_tags(), "mlflow.runName": run_name, **(tags or {})}
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        run = client.create_run(exp_id, run_name=run_name, tags={k: str(v) for k, v in all_tags.items()})
        run_id = run.info.run_id
    else:
        client.update_run(run_id, status="RUNNING")
    tracker = Tracker(client, run_id)
    try:
        yield tracker
    except BaseException as exc:
        pruned = type(exc).__name__ == "TrialPruned"  # an Optuna pruning decision, not a failure
        status = "KILLED" if pruned or isinstance(exc, KeyboardInterrupt) else "FAILED"
        try:
            tracker.set_tags({"rftbench.pruned" if pruned else "rftbench.error": f"{type(exc).__name__}: {exc}"[:5000]})
        finally:
            client.set_terminated(run_id, status=status)
        raise
    else:
        client.set_terminated(run_id, status="FINISHED")
