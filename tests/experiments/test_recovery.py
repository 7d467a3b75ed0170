"""Stale-run detection: which RUNNING MLflow runs have lost their training process."""
import os
import time

import pytest

from rftbench.cli import main
from rftbench.errors import RftbenchError
from rftbench.tracking.recovery import check_resumable, find_stale_runs, mark_stale_runs, process_tags
from rftbench.tracking.store import client_for, get_or_create_experiment


def _running_run(client, exp_id, name, tags):
    run = client.create_run(exp_id, run_name=name, tags={k: str(v) for k, v in tags.items()})
    return run.info.run_id


def test_stale_runs_are_found_by_process_or_heartbeat_and_live_ones_are_kept(workdir, capsys):
    client = client_for()
    exp_id = get_or_create_experiment(client, "recovery")
    me = process_tags()
    alive = _running_run(client, exp_id, "alive", me)
    dead = _running_run(client, exp_id, "dead", {**me, "rftbench.pid": 2**22 + 12345})  # beyond pid_max
    reused = _running_run(client, exp_id, "reused", {**me, "rftbench.proc_start": "1"})  # our pid, not our process
    old = time.time() - 7200
    remote_silent = _running_run(client, exp_id, "remote-silent",
                                 {**me, "rftbench.host": "elsewhere", "rftbench.heartbeat": int(old)})
    remote_fresh = _running_run(client, exp_id, "remote-fresh", {**me, "rftbench.host": "elsewhere"})
    untagged = _running_run(client, exp_id, "study", {})

    stale = {s.run_id: s.reason for s in find_stale_runs("recovery", older_than_s=3600)}
    assert set(stale) == {dead, reused, remote_silent}
    assert "is gone" in stale[dead] and "no heartbeat from elsewhere" in stale[remote_silent]

    assert main(["runs", "mark-stale", "--experiment", "recovery"]) == 0
    assert "3 stale run(s)" in capsys.readouterr().out
    status = {r: client.get_run(r).info.status for r in (alive, dead, reused, remote_silent, remote_fresh, untagged)}
    assert status == {alive: "RUNNING", dead: "KILLED", reused: "KILLED", remote_silent: "KILLED",
                      remote_fresh: "RUNNING", untagged: "RUNNING"}
    end = client.get_run(remote_silent).info.end_time / 1000
    assert end == pytest.approx(old, abs=5)  # ended at its last heartbeat
    assert mark_stale_runs("recovery") == []

    with pytest.raises(RftbenchError, match=f"still being trained by process {os.getpid()}"):
        check_resumable(alive)
    assert check_resumable(dead).info.run_id == dead
    with pytest.raises(RftbenchError, match="no MLflow run 'nope'"):
        check_resumable("nope")
    assert main(["runs", "mark-stale", "--experiment", "no-such-experiment"]) == 2
    assert "no MLflow experiment 'no-such-experiment'" in capsys.readouterr().err


def test_mark_stale_ends_a_run_with_a_rank_failure_record_failed_with_its_error(workdir):
    """A DDP run left RUNNING (rank 0 gone) whose rank 1 recorded its error in the run directory:
    mark-stale ends it FAILED with that error (the earliest record first); without a record, KILLED."""
    from rftbench.tracking.recovery import rank_failures

    client = client_for()
    exp_id = get_or_create_experiment(client, "recovery-ddp")
    gone = {**process_tags(), "rftbench.pid": 2**22 + 12345}  # beyond pid_max
    failed_dir, killed_dir = workdir / "failed", workdir / "killed"
    failed_dir.mkdir()
    (failed_dir / "rank1.failed").write_text("ValueError: this schedule broke on rank 1")
    os.utime(failed_dir / "rank1.failed", (time.time() - 5, time.time() - 5))
    (failed_dir / "rank0.failed").write_text("RuntimeError: gloo: connection closed")
    assert list(rank_failures(failed_dir)) == [1, 0]
    failed = _running_run(client, exp_id, "failed", {**gone, "rftbench.run_dir": failed_dir})
    killed = _running_run(client, exp_id, "killed", {**gone, "rftbench.run_dir": killed_dir})

    assert {s.run_id: s.status for s in find_stale_runs("recovery-ddp")} == {failed: "FAILED", killed: "KILLED"}
    assert {s.run_id: s.status for s in mark_stale_runs("recovery-ddp")} == {failed: "FAILED", killed: "KILLED"}
    run = client.get_run(failed)
    assert run.info.status == "FAILED"
    error = run.data.tags["rftbench.error"]
    assert error.startswith("RankFailedError: rank 1: ValueError: this schedule broke on rank 1; rank 0: RuntimeError")
    assert "stale RUNNING run: process" in error and f"--resume {failed}" in error
    assert client.get_run(killed).info.status == "KILLED"
