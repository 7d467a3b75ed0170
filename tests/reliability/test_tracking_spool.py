"""Tracking never costs training: calls go through an on-disk spool, flushed in the background;
a store that fails loses nothing, a store down at start is a clear error within seconds (or,
with tracking.offline_ok, a local run that `rftbench runs sync` sends later)."""
import json
import socket
import time

import pytest
from conftest import tiny_config

from rftbench.errors import TrackingError


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _history(client, run_id, key):
    return [(m.step, m.value) for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]


def test_failing_store_loses_no_metric_and_flushes_later(workdir, monkeypatch):
    from rftbench.spool import SPOOL_NAME, start_spooled_run
    from rftbench.tracking import client_for

    calls = {"n": 0}
    with start_spooled_run("spool", "flaky", sync_wait_s=20) as tracker:
        real = tracker.client.log_batch

        def flaky(*a, **kw):  # the store is "down" for the first 3 calls
            calls["n"] += 1
            if calls["n"] <= 3:
                raise ConnectionError("store gone")
            return real(*a, **kw)

        monkeypatch.setattr(tracker.client, "log_batch", flaky)
        tracker.interval_s = 0.05
        tracker.attach(workdir / "run")
        t0 = time.perf_counter()
        for step in range(200):
            tracker.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
        assert time.perf_counter() - t0 < 2.0  # logging never waited on the store
        tracker.set_tags({"k": "v"})
    client = client_for()
    run = client.get_run(tracker.run_id)
    assert calls["n"] > 3
    assert run.info.status == "FINISHED" and run.data.tags["k"] == "v"
    assert _history(client, tracker.run_id, "loss") == [(s, 1.0 / (s + 1)) for s in range(200)]
    assert (workdir / "run" / SPOOL_NAME).stat().st_size > 0
    state = json.loads((workdir / "run" / "tracking-spool.state.json").read_text())
    assert state["offset"] == (workdir / "run" / SPOOL_NAME).stat().st_size  # all of it sent


def test_run_is_tagged_with_its_process_at_creation(workdir):
    import os
    import socket as sk

    from rftbench.spool import start_spooled_run
    from rftbench.tracking import client_for

    with start_spooled_run("spool", "tagged") as tracker:
        tags = client_for().get_run(tracker.run_id).data.tags  # before anything was logged
        assert tags["rftbench.pid"] == str(os.getpid()) and tags["rftbench.host"] == sk.gethostname()
        assert "rftbench.heartbeat" in tags
        tracker.attach(workdir / "r")


def test_store_down_at_start_is_a_clear_error_within_seconds(workdir, monkeypatch):
    from rftbench.experiment import run_experiment

    uri = f"http://127.0.0.1:{_free_port()}"
    t0 = time.perf_counter()
    with pytest.raises(TrackingError, match="did not answer.*offline_ok"):
        run_experiment(tiny_config(train__epochs=1), tracking_uri=uri, evaluate=False)
    assert time.perf_counter() - t0 < 15  # checked before the model and data are loaded
    assert not (workdir / "rftbench-runs").exists()


def test_offline_run_is_spooled_then_synced(workdir, capsys):
    from rftbench.cli import main
    from rftbench.experiment import run_experiment
    from rftbench.tracking import client_for

    uri = f"http://127.0.0.1:{_free_port()}"
    cfg = tiny_config(train__epochs=1, train__log_every=2, tracking__offline_ok=True, tracking__sync_wait_s=0)
    res = run_experiment(cfg, tracking_uri=uri, evaluate=False)
    assert res.run_id.startswith("offline-")
    assert "runs sync" in capsys.readouterr().err
    sqlite = f"sqlite:///{workdir / 'mlflow.db'}"
    assert main(["runs", "sync", str(res.run_dir), "--tracking-uri", sqlite, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    client = client_for(sqlite)
    run = client.get_run(out["run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == "tiny"
    assert run.data.params["train.epochs"] == "1" and "rftbench.pid" in run.data.tags
    steps = [s for s, _ in _history(client, out["run_id"], "train_step/loss")]
    assert steps == list(range(2, res.train.total_steps + 1, 2))
    arts = {a.path for a in client.list_artifacts(out["run_id"])}
    assert {"config.yaml", "model"} <= arts
    # a second sync sends nothing more and changes nothing
    assert main(["runs", "sync", str(res.run_dir), "--tracking-uri", sqlite, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["bytes_sent"] == 0


def test_sync_of_a_directory_without_spool_is_clear(workdir, capsys):
    from rftbench.cli import main

    assert main(["runs", "sync", str(workdir)]) == 2
    assert "holds no tracking spool" in capsys.readouterr().err
