"""Tracking never costs training: calls go through an on-disk spool, flushed in the background;
a store that fails loses nothing, a store down at start is a clear error within seconds (or,
with tracking.offline_ok, a local run that `rftbench runs sync` sends later)."""
import json
import socket
import threading
import time

import pytest
from conftest import tiny_config
from mlflow_server import Server, free_port as _free_port

from rftbench.errors import TrackingError


def _history(client, run_id, key):
    return [(m.step, m.value) for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]


def test_failing_store_loses_no_metric_and_flushes_later(workdir, monkeypatch):
    from rftbench.tracking.spool import SPOOL_NAME, start_spooled_run
    from rftbench.tracking.store import client_for

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

    from rftbench.tracking.spool import start_spooled_run
    from rftbench.tracking.store import client_for

    with start_spooled_run("spool", "tagged") as tracker:
        tags = client_for().get_run(tracker.run_id).data.tags  # before anything was logged
        assert tags["rftbench.pid"] == str(os.getpid()) and tags["rftbench.host"] == sk.gethostname()
        assert "rftbench.heartbeat" in tags
        tracker.attach(workdir / "r")


def test_store_down_at_start_is_a_clear_error_within_seconds(workdir, monkeypatch):
    from rftbench.experiments.experiment import run_experiment

    uri = f"http://127.0.0.1:{_free_port()}"
    t0 = time.perf_counter()
    with pytest.raises(TrackingError, match="did not answer.*offline_ok"):
        run_experiment(tiny_config(train__epochs=1), tracking_uri=uri, evaluate=False)
    assert time.perf_counter() - t0 < 15  # checked before the model and data are loaded
    assert not (workdir / "rftbench-runs").exists()


def test_offline_run_is_spooled_then_synced(workdir, capsys):
    from rftbench.cli import main
    from rftbench.experiments.experiment import run_experiment
    from rftbench.tracking.store import client_for

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
    assert {"config.yaml", "model", "mlflow_model"} <= arts
    _check_model_and_inputs(client, run, res)
    # a second sync sends nothing more and changes nothing
    assert main(["runs", "sync", str(res.run_dir), "--tracking-uri", sqlite, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["bytes_sent"] == 0


def _check_model_and_inputs(client, run, res):
    """The MLflow model and the dataset inputs of a spooled run reached the store (the spool's
    copy of the model is removed once sent), and the model is the trained one."""
    import tempfile

    import mlflow.pytorch
    import torch

    assert {i.dataset.name for i in run.inputs.dataset_inputs} == {"digits-train", "digits-val", "digits-test"}
    assert {t.value for i in run.inputs.dataset_inputs for t in i.tags} == {"train", "val", "test"}
    model = mlflow.pytorch.load_model(client.download_artifacts(run.info.run_id, "mlflow_model", tempfile.mkdtemp()))
    x = torch.rand(3, 1, 16, 16)
    with torch.no_grad():
        assert torch.allclose(model(x), res.train.model.eval()(x))
    assert not (res.run_dir / "tracking-artifacts" / "mlflow_model").exists()


@pytest.mark.slow
def test_offline_run_reaches_a_store_that_comes_back(workdir, tmp_path, capfd):
    """A real server down at start (tracking.offline_ok): the run trains, the server comes up
    during training, and the end of the run sends everything -- the MLflow model and the dataset
    inputs included -- to a run it creates there."""
    from mlflow.tracking import MlflowClient

    from rftbench.experiments.experiment import run_experiment
    from rftbench.tracking.spool import Spool
    from rftbench.training.callbacks import PerEpochCallback

    server = Server(tmp_path / "server", _free_port())
    (tmp_path / "server").mkdir()
    starter = threading.Thread(target=server.start)
    cfg = tiny_config(train__epochs=2, tracking__offline_ok=True, tracking__sync_wait_s=180)
    try:
        res = run_experiment(cfg, tracking_uri=server.uri, evaluate=False,
                             callbacks=[PerEpochCallback(lambda e, m: e == 0 and starter.start())])
        starter.join()
        assert res.run_id.startswith("offline-") and "offline_ok is set" in capfd.readouterr().err
        run_id = Spool(res.run_dir).read_state()["run_id"]
        client = MlflowClient(tracking_uri=server.uri)
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED" and run.data.params["train.epochs"] == "2"
        assert len(_history(client, run_id, "train/loss")) == 2
        _check_model_and_inputs(client, run, res)
    finally:
        server.stop()


def test_sync_of_a_directory_without_spool_is_clear(workdir, capsys):
    from rftbench.cli import main

    assert main(["runs", "sync", str(workdir)]) == 2
    assert "holds no tracking spool" in capsys.readouterr().err


def _killed_spool(run_dir, client, run_id):
    """A spool as a SIGKILLed training process leaves it: steps 0-4 sent, 5-9 and the run_dir
    tag written but not sent, and a torn last line (the kill came in the middle of a write)."""
    from rftbench.tracking.spool import Spool, flush_spool

    spool = Spool(run_dir)
    run_dir.mkdir(parents=True)
    state = {"uri": client.tracking_uri, "offset": 0, "run_id": run_id}
    spool.write_state(state)
    metrics = [{"t": "metrics", "items": [["loss", 1.0 / (s + 1), 1000 + s, s]]} for s in range(10)]
    spool.append(Spool.encode(metrics[:5]))
    assert flush_spool(spool, client, state) > 0
    spool.append(Spool.encode(metrics[5:] + [{"t": "tags", "items": {"rftbench.run_dir": str(run_dir)}}]))
    spool.append(b'{"t": "metrics", "items": [["loss", 0.0909')  # torn: no newline, not JSON
    return spool


def test_resumed_run_continues_a_killed_spool_with_a_torn_last_line(workdir):
    """The known bug of issue 15: the resumed run's first entry was glued onto the torn line, so
    the flusher met a line that was not JSON and sent nothing more (rftbench.resumed_from lost)."""
    from rftbench.tracking.spool import SPOOL_NAME, start_spooled_run
    from rftbench.tracking.store import client_for, get_or_create_experiment

    client = client_for()
    run_id = client.create_run(get_or_create_experiment(client, "spool"), run_name="killed").info.run_id
    spool = _killed_spool(workdir / "run", client, run_id)
    assert _history(client, run_id, "loss") == [(s, 1.0 / (s + 1)) for s in range(5)]
    with start_spooled_run("spool", "killed", run_id=run_id, sync_wait_s=20) as tracker:
        tracker.attach(workdir / "run")
        tracker.set_tags({"rftbench.resumed_from": '{"epoch": 0, "batch": 10}'})
        tracker.log_metrics({"loss": 0.5}, step=10)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["rftbench.resumed_from"] == '{"epoch": 0, "batch": 10}'
    assert run.data.tags["rftbench.run_dir"] == str(workdir / "run")  # the killed process's unsent tag
    assert _history(client, run_id, "loss") == [(s, 1.0 / (s + 1)) for s in range(10)] + [(10, 0.5)]
    lines = (workdir / "run" / SPOOL_NAME).read_bytes().splitlines()
    assert all(json.loads(line) for line in lines) and b"0.0909" not in b"".join(lines)  # the torn piece is cut
    assert spool.read_state()["offset"] == (workdir / "run" / SPOOL_NAME).stat().st_size


def test_a_corrupt_line_is_skipped_not_a_wall(workdir):
    from rftbench.tracking.spool import Spool, flush_spool
    from rftbench.tracking.store import client_for, get_or_create_experiment

    client = client_for()
    run_id = client.create_run(get_or_create_experiment(client, "spool")).info.run_id
    spool = Spool(workdir / "run")
    (workdir / "run").mkdir()
    good = [{"t": "metrics", "items": [["m", float(s), 1000, s]]} for s in range(2)]
    spool.append(Spool.encode(good[:1]) + b"\x00garbage{\n" + Spool.encode(good[1:]))
    state = {"uri": client.tracking_uri, "offset": 0, "run_id": run_id}
    assert flush_spool(spool, client, state) == spool.size()
    assert _history(client, run_id, "m") == [(0, 0.0), (1, 1.0)]


def test_compaction_cut_short_by_a_crash_resends_nothing_lost(tmp_path):
    """keep_tail rewrites the log to its unsent tail before the state says offset 0: a crash in
    between leaves an offset past the end, read as 0 -- the tail, all of it unsent, is sent."""
    from rftbench.tracking.spool import Spool

    spool = Spool(tmp_path)
    sent = Spool.encode([{"t": "tags", "items": {"k": "x" * 200}}])
    unsent = Spool.encode([{"t": "tags", "items": {"k": "y"}}])
    spool.append(sent + unsent)
    spool.write_state({"offset": len(sent)})
    assert spool.keep_tail(len(sent)) == len(unsent)
    state = spool.read_state()  # the crash: the state was not rewritten
    assert state["offset"] == 0 and [e for _, e in spool.pending(0)] == [{"t": "tags", "items": {"k": "y"}}]


def _wait_sent(tracker, timeout_s=60.0):
    """Block the test (not the tracker) until the flusher has sent all that was spooled."""
    deadline = time.time() + timeout_s
    while time.time() < deadline and int(tracker._state["offset"]) != tracker.spool.size():
        time.sleep(0.02)
    assert int(tracker._state["offset"]) == tracker.spool.size()


def test_spool_stays_under_its_cap_while_the_store_keeps_up(workdir):
    from rftbench.tracking.spool import SPOOL_NAME, start_spooled_run
    from rftbench.tracking.store import client_for

    cap, biggest = 64 << 10, 0
    with start_spooled_run("spool", "compacted", max_bytes=cap) as tracker:
        tracker.interval_s = 0.02
        tracker.attach(workdir / "run")
        for chunk in range(12):
            for step in range(chunk * 100, (chunk + 1) * 100):
                tracker.log_metrics({"loss": float(step)}, step=step, per_step=True)
            biggest = max(biggest, tracker.spool.size())
            _wait_sent(tracker)
    assert tracker.dropped == 0 and biggest <= cap
    assert (workdir / "run" / SPOOL_NAME).stat().st_size < cap // 4 + 1000  # the sent part was dropped
    assert _history(client_for(), tracker.run_id, "loss") == [(s, float(s)) for s in range(1200)]


def test_full_spool_drops_per_step_entries_first_and_says_so(workdir, monkeypatch, capsys):
    """With the store down and the spool at its cap, per-step metrics and heartbeats are dropped;
    epoch metrics, tags and params all arrive once the store is back, with the count dropped."""
    from rftbench.tracking.spool import start_spooled_run
    from rftbench.tracking.store import client_for

    down = threading.Event()
    down.set()
    cap = 16 << 10
    with start_spooled_run("spool", "full", max_bytes=cap, sync_wait_s=30) as tracker:
        real = tracker.client.log_batch

        def store(*a, **kw):
            if down.is_set():
                raise ConnectionError("store gone")
            return real(*a, **kw)

        monkeypatch.setattr(tracker.client, "log_batch", store)
        tracker.interval_s = 0.02
        tracker.attach(workdir / "run")
        tracker.log_params({"p": 1})
        for step in range(1, 601):
            tracker.log_metrics({"train_step/loss": 1.0 / step}, step=step, per_step=True)
            tracker.set_tags({"rftbench.heartbeat": step}, per_step=True)
            if step % 100 == 0:
                tracker.log_metrics({"train/loss": float(step)}, step=step // 100)
                tracker.set_tags({"epoch_done": step // 100})
        size_while_down = tracker.spool.size()
        dropped = tracker.dropped
        down.clear()  # the store is back; the run ends and sends what was kept
    err = capsys.readouterr().err
    assert "tracking spool" in err and "is full" in err and "epoch metrics, params, tags and artifacts are kept" in err
    assert 0 < dropped and size_while_down <= cap + 6 * 200  # over the cap only by the epoch-level entries
    client = client_for()
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED" and run.data.params["p"] == "1" and run.data.tags["epoch_done"] == "6"
    assert run.data.tags["rftbench.spool_dropped"] == str(dropped)
    assert _history(client, tracker.run_id, "train/loss") == [(e, 100.0 * e) for e in range(1, 7)]
    kept = _history(client, tracker.run_id, "train_step/loss")
    assert kept == [(s, 1.0 / s) for s in range(1, len(kept) + 1)]  # the first steps, until the cap
    assert 0 < len(kept) < 600 and (600 - len(kept)) * 2 == dropped  # each step: one metric, one heartbeat


def test_sweep_resumes_a_run_killed_before_its_run_dir_tag_was_sent(workdir):
    """A kill before the spool's first flush leaves the run without ``rftbench.run_dir`` in the
    store; its checkpoint is in the default ``output_dir/RUN_ID``, and the sweep resumes from it
    (it used to retrain such a run from scratch, without ``rftbench.resumed_from``)."""
    from rftbench.experiments.gridrun import IDENTITY_TAG, PointOptions, run_identity, run_point
    from rftbench.tracking.recovery import HOST_TAG, PID_TAG
    from rftbench.tracking.store import client_for, get_or_create_experiment
    from rftbench.training import Callback, train

    class Killed(Callback):
        def on_batch_end(self, trainer, batch):
            if batch.step == 5:
                raise RuntimeError("SIGKILL stand-in")

    cfg = tiny_config(train__epochs=1, train__checkpoint_every_steps=2)
    client = client_for()
    run_id = client.create_run(get_or_create_experiment(client, cfg.experiment), run_name=cfg.name, tags={
        IDENTITY_TAG: run_identity(cfg), HOST_TAG: socket.gethostname(), PID_TAG: str(2 ** 22 + 7)}).info.run_id
    with pytest.raises(RuntimeError, match="stand-in"):
        train(cfg, run_dir=workdir / cfg.output_dir / run_id, callbacks=[Killed()])
    res = run_point(cfg.model_dump(), {}, PointOptions(evaluate=False, settle_s=0.0))
    assert (res.status, res.run_id) == ("resumed", run_id)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert json.loads(run.data.tags["rftbench.resumed_from"]) == {"epoch": 0, "batch": 4}
