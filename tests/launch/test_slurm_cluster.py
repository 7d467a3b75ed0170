"""The submitit launcher on a real single-node SLURM cluster (Debian's slurm-wlm, started by the
test; :mod:`slurm_cluster`), with and without accounting: the toy grid lands every run once and
tasks share the node, a rerun skips all, ``scancel`` ends the sweep in bounded time with the
run's own message and the next sweep resumes it, and a 1-minute time limit is a requeue that
finishes the run without a command from the user."""
from __future__ import annotations

import json
import os
import subprocess
import threading
import time

import pytest
import yaml
from grid_helpers import runs_by_name, write_grid
from slurm_cluster import SlurmCluster, unavailable

from rftbench.cli import main

pytestmark = pytest.mark.slow
CLUSTERS_OFF = None if os.environ.get("RFTBENCH_TEST_CLUSTERS") else (
    "real-cluster tests run with `make test-cluster` (RFTBENCH_TEST_CLUSTERS=1); they take about 12 minutes")


@pytest.fixture(params=[False, True], ids=["no-accounting", "accounting"])
def slurm(request, workdir, monkeypatch):
    why = unavailable(accounting=request.param) or CLUSTERS_OFF
    if why:
        pytest.skip(why)
    cluster = SlurmCluster(workdir / "slurm", accounting=request.param, cpus=2, mem_mb=12000).start()
    for k, v in cluster.env.items():
        monkeypatch.setenv(k, v)
    yield cluster
    subprocess.run(["scancel", "-u", "root"], env={**cluster.env, "PATH": "/usr/bin:/bin"}, check=False)
    cluster.stop()


def sweep(capsys, *args) -> tuple[int, dict]:
    rc = main(["sweep", *map(str, args), "--launcher", "submitit", "--submitit-cluster", "slurm", "--json"])
    return rc, json.loads(capsys.readouterr().out)


def long_grid(path, n: int, epochs: int):
    """The toy grid with ``epochs`` epochs per run (a run of some tens of seconds)."""
    write_grid(path, n=n)
    spec = yaml.safe_load(path.read_text())
    spec["base"]["train"].update(epochs=epochs, checkpoint_every_steps=1)
    path.write_text(yaml.safe_dump(spec))
    return path


def test_grid_lands_once_tasks_share_the_node_and_a_rerun_skips(slurm, workdir, capsys):
    spec = write_grid(workdir / "grid.yaml")
    rc, out = sweep(capsys, spec)
    assert rc == 0 and [r["status"] for r in out["runs"]] == ["finished"] * 6, out
    runs = runs_by_name()
    assert sorted(runs) == [f"r{i}" for i in range(6)] and all(len(v) == 1 for v in runs.values())
    assert all(v[0].info.status == "FINISHED" for v in runs.values())
    jobs = {v[0].data.tags["rftbench.slurm.job_id"] for v in runs.values()}
    assert len(jobs) == 6 and all("_" in j for j in jobs)  # one array task per run
    spans = sorted((v[0].info.start_time, v[0].info.end_time) for v in runs.values())
    assert any(b[0] < a[1] for a, b in zip(spans, spans[1:])), "no two tasks ran at once"
    rc, out = sweep(capsys, spec)
    assert rc == 0 and out["summary"]["skipped"] == 6 and len(runs_by_name()) == 6


def _wait_for(cond, timeout_s: float, what: str):
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        value = cond()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def test_scancel_ends_the_sweep_with_the_runs_message_and_the_next_sweep_resumes(slurm, workdir, capsys):
    spec = long_grid(workdir / "grid.yaml", n=1, epochs=40)
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(zip(("rc", "out"), sweep(capsys, spec))), daemon=True)
    thread.start()

    def training_started():
        try:
            runs = runs_by_name().get("r0")
        except Exception:  # noqa: BLE001 - the store or the experiment is not there yet
            return None
        return runs and runs[0].data.metrics.get("train/epoch_time_s") is not None and slurm.squeue()

    (job_id, _), = _wait_for(training_started, 240, "the run to train an epoch")
    cancelled = time.monotonic()
    subprocess.run(["scancel", job_id], env={**slurm.env, "PATH": "/usr/bin:/bin"}, check=True)
    thread.join(timeout=180)
    assert not thread.is_alive(), "the sweep still waits after scancel"
    assert time.monotonic() - cancelled < 150
    (run,) = result["out"]["runs"]
    assert result["rc"] == 1 and run["status"] == "failed"
    assert "SIGTERM received" in run["message"] and "logs:" in run["message"], run["message"]
    assert runs_by_name()["r0"][0].info.status == "KILLED"
    rc, out = sweep(capsys, spec)
    assert rc == 0 and [r["status"] for r in out["runs"]] == ["resumed"], out
    (run,) = runs_by_name()["r0"]
    assert run.info.status == "FINISHED" and "rftbench.resumed_from" in run.data.tags


def test_a_time_limit_requeues_the_task_and_the_run_finishes(slurm, workdir, capsys):
    spec = long_grid(workdir / "grid.yaml", n=1, epochs=60)
    rc, out = sweep(capsys, spec, "--slurm-time", "1", "--slurm-signal-delay", "20")
    # the result is the requeued call's, which resumed the run the first allocation stopped
    assert rc == 0 and [r["status"] for r in out["runs"]] == ["resumed"], out
    (run,) = runs_by_name()["r0"]
    assert run.info.status == "FINISHED"
    assert int(run.data.tags["rftbench.slurm.restarts"]) >= 1  # it was requeued, and resumed
    assert "rftbench.resumed_from" in run.data.tags
    assert run.data.tags["rftbench.slurm.signal_delay_s"] == "20"
