"""Concurrent first use: processes started at the same instant in a fresh directory all succeed
while the MLflow store is created (MLflow alone races on CREATE TABLE and alembic)."""
import subprocess
import sys
import time

import pytest

SCRIPT = """
import sys, time
t0 = float(sys.argv[2])
from rftbench.tracking.store import client_for, start_run
while time.time() < t0:
    pass
with start_run("concurrent", f"run{sys.argv[1]}") as tracker:
    tracker.log_metrics({"x": float(sys.argv[1])})
print("ok", sys.argv[1])
"""


@pytest.mark.slow
def test_four_processes_create_the_store_at_once(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    script = tmp_path / "worker.py"
    script.write_text(SCRIPT)
    start = time.time() + 8  # all import first, then go at the same instant
    procs = [subprocess.Popen([sys.executable, str(script), str(i), str(start)], cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(4)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("concurrent").experiment_id])
    assert sorted(r.data.metrics["x"] for r in runs) == [0.0, 1.0, 2.0, 3.0]
    assert {r.info.status for r in runs} == {"FINISHED"}
