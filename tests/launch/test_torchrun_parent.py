"""``rftbench train --nproc N``'s process after a failed DDP job: the run that rank 0 could not end
is ended KILLED (how each rank ended, how to resume); a run rank 0 did end is left as it is."""
from types import SimpleNamespace

from rftbench.launch.torchrun import describe_failures, end_unended_run
from rftbench.tracking import client_for, get_or_create_experiment


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
