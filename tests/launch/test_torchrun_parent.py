"""``rftbench train --nproc N``'s process after a failed DDP job: the run that rank 0 could not end
is ended KILLED (how each rank ended, how to resume); a run rank 0 did end is left as it is."""
from types import SimpleNamespace

from rftbench.launch.torchrun import describe_failures, end_unended_run
from rftbench.tracking.store import client_for, get_or_create_experiment


def failure(exitcode, timestamp):
    """A stand-in for torch elastic's ProcessFailure (exit code, second it was seen, signal name)."""
    import signal

    return SimpleNamespace(exitcode=exitcode, timestamp=timestamp,
                           signal_name=lambda: signal.Signals(-exitcode).name)


def test_failures_are_described_earliest_first_and_the_launchers_sigterm_last():
    # rank 1 was SIGKILLed; in the same second torch elastic sent rank 0 its SIGTERM
    assert describe_failures({0: failure(-15, 100), 1: failure(-9, 100)}) == \
        "rank 1 was killed by SIGKILL, rank 0 was killed by SIGTERM"
    assert describe_failures({0: failure(-15, 101), 1: failure(1, 100)}) == \
        "rank 1 exited with code 1, rank 0 was killed by SIGTERM"


def test_a_run_left_running_ends_killed_and_an_ended_one_is_kept(workdir, capsys):
    client = client_for()
    exp_id = get_or_create_experiment(client, "ddp")
    running = client.create_run(exp_id, run_name="running").info.run_id
    failed = client.create_run(exp_id, run_name="failed").info.run_id
    client.set_terminated(failed, status="FAILED")
    id_file = workdir / "run_id"

    id_file.write_text(running)
    end_unended_run(id_file, "the DDP job failed (rank 0 was killed by SIGKILL)")
    run = client.get_run(running)
    assert run.info.status == "KILLED" and run.info.end_time is not None
    assert run.data.tags["rftbench.error"].startswith("the DDP job failed (rank 0 was killed by SIGKILL)")
    assert f"--resume {running}" in run.data.tags["rftbench.error"]
    assert f"run {running} ended KILLED" in capsys.readouterr().err

    id_file.write_text(failed)
    end_unended_run(id_file, "the DDP job failed")
    assert client.get_run(failed).info.status == "FAILED"  # rank 0 ended it: its own record stands
    assert "rftbench.error" not in client.get_run(failed).data.tags

    end_unended_run(workdir / "never-written", "rank 0 died before it created the run")  # nothing to end
    id_file.write_text("no-such-run")
    end_unended_run(id_file, "the DDP job failed")  # a store that does not know the run: reported, not raised
    assert "could not end run no-such-run" in capsys.readouterr().err


def test_a_run_left_running_after_a_rank_recorded_its_error_ends_failed_with_it(workdir, capsys, monkeypatch):
    """Rank 1 recorded its error, then torchrun's SIGTERM cut rank 0 before it ended the run: this
    process ends it FAILED with rank 1's error, not KILLED, whether the record lies beside the id
    file or only in the run directory (the run's ``rftbench.run_dir`` tag)."""
    from rftbench.training.distributed import RUN_ID_FILE_ENV, record_failure

    client = client_for()
    exp_id = get_or_create_experiment(client, "ddp")
    launcher, run_dir = workdir / "launcher", workdir / "run"
    launcher.mkdir()
    id_file = launcher / "run_id"
    monkeypatch.setenv(RUN_ID_FILE_ENV, str(id_file))
    reason = "the DDP job failed (rank 1 exited with code 1, rank 0 was killed by SIGTERM)"
    for where in ("beside the id file", "in the run directory"):
        run_id = client.create_run(exp_id, run_name=where, tags={"rftbench.run_dir": str(run_dir)}).info.run_id
        record_failure(run_dir, 1, ValueError("this schedule broke on rank 1"))  # both places
        if where == "in the run directory":
            (launcher / "rank1.failed").unlink()
        id_file.write_text(run_id)
        end_unended_run(id_file, reason)
        run = client.get_run(run_id)
        assert run.info.status == "FAILED", where
        error = run.data.tags["rftbench.error"]
        assert error.startswith("RankFailedError: rank 1: ValueError: this schedule broke on rank 1") and reason in error
        assert f"--resume {run_id}" in error
        assert f"run {run_id} ended FAILED" in capsys.readouterr().err
        (run_dir / "rank1.failed").unlink()
