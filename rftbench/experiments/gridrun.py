"""Idempotent, fault-isolated grids: run identities, claims in MLflow, and one grid point's work.

Every grid run has an *identity*: a hash of its resolved config (:func:`run_identity`; the code
version is recorded beside it in ``rftbench.code_version``, not in it), stored on its MLflow run
as the tag ``rftbench.run_identity``. Before training, :func:`run_point` looks the identity up:

- a FINISHED run with an evaluation record (tag ``rftbench.er_name``) -> ``skipped``;
- a run that someone alive is working on (a live claim) -> ``skipped`` (busy);
- a KILLED run, or one left RUNNING by a dead process -> ``resumed`` from its checkpoint
  (looked for in the run's recorded directory, else in ``output_dir/RUN_ID``: a run killed
  before its ``rftbench.run_dir`` tag reached the store), or trained afresh in the same run
  when it left none;
- a FAILED run -> ``failed`` again, unless ``retry_failed`` (then resumed);
- nothing -> a new run, ``finished``.

A run is claimed before it is trained: the claimant writes a tag ``rftbench.claim.<nonce>``
(host, pid, process start, time) on the run (a new run is created with it), waits
``settle_s`` and reads every live claim on runs of that identity back; the oldest live claim
wins and the others back off (a new loser deletes its run). A claim is live while its process
lives (same host, :func:`rftbench.tracking.recovery.process_state`) or, on another host, while the
claim or the run's heartbeat is younger than ``stale_after_s``. Claims are released on exit.
So two sweeps of one grid at once never train a run twice, and a dead claimant's run is resumed.
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

from ..config import ExperimentConfig, parse_config
from ..tracking.recovery import HEARTBEAT_TAG, PID_TAG, _proc_stat, _run_process, process_state, run_dir_of
from ..tracking.store import client_for, get_or_create_experiment

IDENTITY_TAG, CODE_TAG, CLAIM_PREFIX = "rftbench.run_identity", "rftbench.code_version", "rftbench.claim."
RECORD_TAG = "rftbench.er_name"  # set once an evaluation record was logged
VOLATILE_KEYS = (("train", "progress"),)  # do not change what a run computes


def run_identity(cfg: ExperimentConfig) -> str:
    """A hash of the resolved config (without display-only keys such as ``train.progress``)."""
    data = cfg.model_dump()
    for section, key in VOLATILE_KEYS:
        data.get(section, {}).pop(key, None)
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:24]


@lru_cache(maxsize=1)
def code_version() -> str:
    """``rftbench <version>`` plus the git commit of the source tree when there is one."""
    from .. import __version__

    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=Path(__file__).parent, timeout=5,
                             capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{__version__}+g{sha}" if sha else __version__


@dataclass
class PointOptions:
    """How :func:`run_point` treats existing runs (see the module docstring)."""

    retry_failed: bool = False
    settle_s: float = 0.5
    stale_after_s: float = 3600.0
    evaluate: bool = True


@dataclass
class Decision:
    action: str  # skip | busy | resume | failed | new
    run: Any = None
    message: str = ""


@dataclass
class PointResult:
    """What happened to one grid point: ``status`` finished | skipped | resumed | failed."""

    name: str
    identity: str
    status: str
    run_id: Optional[str] = None
    message: str = ""
    summary: dict[str, Any] = field(default_factory=dict)
    trained: bool = False  # this call trained the run (whole or in part); a launcher tags only such runs


def _claims(run) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for key, value in run.data.tags.items():
        if key.startswith(CLAIM_PREFIX):
            try:
                out.append((key[len(CLAIM_PREFIX):], json.loads(value)))
            except ValueError:
                continue
    return out


def _claim_live(run, claim: dict[str, Any], stale_after_s: float) -> bool:
    state = process_state(claim.get("host", ""), int(claim.get("pid", -1)), str(claim.get("start", "")))
    if state != "unknown":
        return state == "alive"
    last = max(float(claim.get("t", 0)), float(run.data.tags.get(HEARTBEAT_TAG) or 0))
    return time.time() - last < stale_after_s


def _process_live(run, stale_after_s: float) -> bool:
    """Whether the training process recorded on a RUNNING run (recovery's tags) still works on it."""
    if run.info.status != "RUNNING" or PID_TAG not in run.data.tags:
        return False
    host, pid, start, heartbeat = _run_process(run)
    state = process_state(host, pid, start)
    return state == "alive" or (state == "unknown" and time.time() - heartbeat < stale_after_s)


def live_claims(runs: list, stale_after_s: float) -> list[tuple[float, str, str]]:
    """(time, nonce, run id) of every live claim on ``runs``, oldest first."""
    out = []
    for run in runs:
        for nonce, claim in _claims(run):
            if _claim_live(run, claim, stale_after_s):
                out.append((float(claim.get("t", 0)), nonce, run.info.run_id))
    return sorted(out)


def find_runs(client, exp_id: str, identity: str) -> list:
    return client.search_runs([exp_id], filter_string=f"tags.`{IDENTITY_TAG}` = '{identity}'",
                              order_by=["attributes.start_time DESC"], max_results=1000)


def decide(runs: list, opts: PointOptions) -> Decision:
    """What to do with a grid point whose MLflow runs (newest first) are ``runs``."""
    for run in runs:
        if run.info.status == "FINISHED" and RECORD_TAG in run.data.tags:
            return Decision("skip", run, f"already finished (MLflow run {run.info.run_id})")
    for run in runs:
        if live_claims([run], opts.stale_after_s) or _process_live(run, opts.stale_after_s):
            return Decision("busy", run, f"being trained by another process (MLflow run {run.info.run_id})")
    if not runs:
        return Decision("new")
    last = runs[0]
    if last.info.status == "FAILED" and not opts.retry_failed:
        err = last.data.tags.get("rftbench.error", "no message recorded")
        return Decision("failed", last, f"failed earlier (MLflow run {last.info.run_id}: {err}); "
                                        f"re-run with --retry-failed to try again")
    return Decision("resume", last, f"{last.info.status.lower()} run {last.info.run_id}")


def claim_tag() -> tuple[str, str]:
    """A fresh claim: (tag key, JSON value) naming this process."""
    stat = _proc_stat(os.getpid())
    value = {"host": socket.gethostname(), "pid": os.getpid(), "start": stat[1] if stat else "", "t": time.time()}
    return CLAIM_PREFIX + uuid.uuid4().hex[:16], json.dumps(value)


def _create_claimed_run(client, exp_id: str, cfg: ExperimentConfig, identity: str, tags: dict[str, Any],
                        claim: tuple[str, str]) -> str:
    all_tags = {"mlflow.runName": cfg.name, "rftbench.schedule": cfg.schedule.name, "rftbench.model": cfg.model.name,
                "rftbench.dataset": cfg.data.name, "rftbench.kind": "experiment", IDENTITY_TAG: identity,
                CODE_TAG: code_version(), **tags, claim[0]: claim[1]}
    run = client.create_run(exp_id, run_name=cfg.name, tags={k: str(v) for k, v in all_tags.items()})
    return run.info.run_id


def contest(client, exp_id: str, identity: str, nonce_key: str, opts: PointOptions) -> bool:
    """After ``settle_s``: whether the claim ``nonce_key`` is the oldest live claim on the identity."""
    time.sleep(opts.settle_s)
    claims = live_claims(find_runs(client, exp_id, identity), opts.stale_after_s)
    return bool(claims) and claims[0][1] == nonce_key[len(CLAIM_PREFIX):]


def _release(client, run_id: str, key: str) -> None:
    try:
        client.delete_tag(run_id, key)
    except Exception:  # noqa: BLE001 - a deleted run has no tags to release
        pass


def _fail_open_run(client, run_id: str, exc: BaseException) -> None:
    """End a run this worker claimed but that never started training (it would stay RUNNING)."""
    try:
        if client.get_run(run_id).info.status == "RUNNING":
            client.set_tag(run_id, "rftbench.error", f"{type(exc).__name__}: {exc}"[:5000])
            client.set_terminated(run_id, status="FAILED")
    except Exception:  # noqa: BLE001
        pass


def _train(cfg: ExperimentConfig, run_id: str, decision: Decision, opts: PointOptions, tags: dict[str, Any]):
    from .experiment import run_experiment

    if decision.action in ("resume", "failed") and _has_checkpoint(cfg, decision.run):
        return run_experiment(cfg, resume_run_id=run_id, evaluate=opts.evaluate)
    return run_experiment(cfg, claimed_run_id=run_id, evaluate=opts.evaluate, extra_tags=tags)


def _has_checkpoint(cfg: ExperimentConfig, run) -> bool:
    """Whether ``run`` left a resumable state: in its recorded directory, or in the default one
    when it was killed before its ``rftbench.run_dir`` tag reached the store."""
    from .experiment import run_dir_for
    from ..training.state import STATE_FILE

    return (run_dir_for(cfg, run.info.run_id, run_dir_of(run)) / STATE_FILE).is_file()


def _summary(res) -> dict[str, Any]:
    rec = res.record
    return {"acc_clean": rec["clean_accuracy"] if rec else None,
            "expected_robustness": rec["expected_robustness"]["value"] if rec else None,
            "train_wall_time_s": res.train.wall_time_s}


def run_point(config: dict[str, Any], labels: dict[str, str], opts: Optional[PointOptions] = None) -> PointResult:
    """Do what one grid point needs (skip, resume, train, or back off), under a claim; never raises
    for a failing run (the result says ``failed`` with the message). Picklable for any launcher."""
    opts = opts or PointOptions()
    cfg = parse_config(config, f"grid point {config.get('name')}")
    identity = run_identity(cfg)
    client = client_for()
    exp_id = get_or_create_experiment(client, cfg.experiment)
    decision = decide(find_runs(client, exp_id, identity), opts)
    if decision.action in ("skip", "busy") or (decision.action == "failed" and not opts.retry_failed):
        status = "failed" if decision.action == "failed" else "skipped"
        return PointResult(cfg.name, identity, status, decision.run.info.run_id, decision.message)
    claim = claim_tag()
    tags = {f"rftbench.grid.{k}": v for k, v in labels.items()}
    if decision.action == "new":
        run_id = _create_claimed_run(client, exp_id, cfg, identity, tags, claim)
    else:
        run_id = decision.run.info.run_id
        client.set_tag(run_id, *claim)
    if not contest(client, exp_id, identity, claim[0], opts):
        if decision.action == "new":
            client.delete_run(run_id)
        else:
            _release(client, run_id, claim[0])
        return PointResult(cfg.name, identity, "skipped", run_id, "claimed by another process at the same time")
    try:
        res = _train(cfg, run_id, decision, opts, tags)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - one failing run never stops the grid
        _fail_open_run(client, run_id, exc)
        return PointResult(cfg.name, identity, "failed", run_id, f"{type(exc).__name__}: {exc}", trained=True)
    finally:
        _release(client, run_id, claim[0])
    status = "finished" if decision.action == "new" else "resumed"
    return PointResult(cfg.name, identity, status, run_id, decision.message, _summary(res), trained=True)
