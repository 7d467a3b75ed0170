"""A real `mlflow server` killed mid-run and restarted: training goes on, and the run's metric
history equals that of an undisturbed run; a run SIGKILLed right after it was created (before
training) carries its host/pid tags, so `runs mark-stale` finds it."""
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from conftest import tiny_config
from mlflow_server import Server, free_port

from rftbench.training.callbacks import PerEpochCallback


@pytest.fixture
def server(tmp_path):
    srv = Server(tmp_path, free_port())
    srv.start()
    yield srv
    srv.stop()


def _metrics(client, run_id):
    run = client.get_run(run_id)
    keys = [k for k in run.data.metrics if "time" not in k and "per_s" not in k]
    return {k: sorted((m.step, m.value) for m in client.get_metric_history(run_id, k)) for k in keys}


@pytest.mark.slow
def test_server_killed_and_restarted_mid_run_loses_nothing(workdir, server, capfd):
    from mlflow.tracking import MlflowClient

    from rftbench.experiments.experiment import run_experiment

    cfg = tiny_config(train__epochs=4, train__log_every=1, tracking__sync_wait_s=180)
    quiet = run_experiment(cfg.model_copy(update={"name": "undisturbed"}), tracking_uri=server.uri, evaluate=False)

    def outage(epoch, metrics):
        if epoch == 0:
            server.kill()
            threading.Timer(6.0, server.start).start()  # back while training still runs (or at its end)

    t0 = time.perf_counter()
    hit = run_experiment(cfg.model_copy(update={"name": "outage"}), tracking_uri=server.uri, evaluate=False,
                         callbacks=[PerEpochCallback(outage)])
    assert time.perf_counter() - t0 < 300
    err = capfd.readouterr().err
    assert "does not answer" in err and "training continues" in err and "answers again" in err
    client = MlflowClient(tracking_uri=server.uri)
    run = client.get_run(hit.run_id)
    assert run.info.status == "FINISHED"
    expected, got = _metrics(client, quiet.run_id), _metrics(client, hit.run_id)
    assert len(got["train_step/loss"]) == hit.train.total_steps
    assert got == expected
    assert {a.path for a in client.list_artifacts(hit.run_id, "model")} == {"model/model.safetensors",
                                                                             "model/model.safetensors.json"}
    assert hit.train.history and len(hit.train.history) == 4  # no epoch lost


KILLED_EARLY = """
import sys, time
from rftbench.tracking.spool import start_spooled_run
with start_spooled_run("early", "loading") as tracker:
    print(tracker.run_id, flush=True)
    time.sleep(600)  # model/data loading that never ends
"""


@pytest.mark.slow
def test_run_killed_before_training_is_found_by_mark_stale(workdir):
    from rftbench.tracking.recovery import mark_stale_runs
    from rftbench.tracking.store import client_for

    script = workdir / "early.py"
    script.write_text(KILLED_EARLY)
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    run_id = proc.stdout.readline().strip()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert client_for().get_run(run_id).info.status == "RUNNING"
    stale = mark_stale_runs("early")
    assert [s.run_id for s in stale] == [run_id] and "is gone" in stale[0].reason
    assert client_for().get_run(run_id).info.status == "KILLED"
