"""Two tuner processes join one Optuna study in a real PostgreSQL server and log their trials
to a real MLflow tracking server (both on loopback), as workers on several machines would."""
from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from conftest import tiny_config

PG_BIN = sorted(glob.glob("/usr/lib/postgresql/*/bin"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres(cmd: list[str]) -> list[str]:
    if os.geteuid() == 0:  # the server refuses to run as root
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


pytestmark = pytest.mark.slow  # a PostgreSQL server, an MLflow server and worker processes


@pytest.fixture
def postgres_url(tmp_path):
    if not PG_BIN or (os.geteuid() == 0 and not shutil.which("runuser")):
        pytest.skip("PostgreSQL server binaries not installed (.ci/run installs them)")
    bin_dir = Path(PG_BIN[-1])
    # pytest's tmp folders are private to root; the server's user must be able to reach its data
    base = Path(tempfile.mkdtemp(prefix="rftbench-pg-"))
    os.chmod(base, 0o755)
    data = base / "data"
    data.mkdir()
    if os.geteuid() == 0:
        shutil.chown(data, "postgres", "postgres")
    port = _free_port()
    subprocess.run(_as_postgres([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"]),
                   check=True, capture_output=True)
    subprocess.run(_as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-w", "-l", str(data / "log"), "-o",
                                 f"-p {port} -k {data} -c listen_addresses=127.0.0.1", "start"]),
                   check=True, capture_output=True)
    try:
        subprocess.run(_as_postgres([str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port),
                                     "-U", "postgres", "optuna"]), check=True, capture_output=True)
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/optuna"
    finally:
        subprocess.run(_as_postgres([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                       capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def mlflow_server(tmp_path):
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'srv.db'}",
         "--artifacts-destination", str(tmp_path / "srv-artifacts"), "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300  # about 12 s on an idle machine; far more on a loaded one
        while True:
            try:
                if urllib.request.urlopen(f"{url}/health", timeout=1).status == 200:
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("mlflow server did not answer /health within 300 s")
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.timeout(1800)
def test_four_workers_lose_and_duplicate_no_trial(tmp_path, postgres_url, mlflow_server, embedded_cache):
    """Two `rftbench tune --workers 2` commands (as on two machines): four worker processes on one
    PostgreSQL study and one MLflow server, one trial each."""
    import optuna

    from rftbench.tracking.store import client_for

    cfg = tiny_config(train__epochs=1, train__val_samples=16, attack__steps=1, eval__num_points=2,
                      eval__sweep_steps=1, experiment="distributed", schedule={"name": "epsilon_scheduling", "params": {}})
    cfg_path = tmp_path / "tune.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server, "RFTBENCH_CACHE": str(embedded_cache)}
    cmd = [sys.executable, "-m", "rftbench.cli", "tune", str(cfg_path), "--trials", "1", "--storage",
           postgres_url, "--study", "shared", "--sampler", "tpe", "--pruner", "none", "--workers", "2", "--json"]
    env["OMP_NUM_THREADS"] = "1"
    commands = [subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True) for _ in range(2)]
    outs = [c.communicate(timeout=1700) for c in commands]
    for c, (out, err) in zip(commands, outs):
        assert c.returncode == 0, err[-3000:]
    study = optuna.load_study(study_name="shared", storage=postgres_url)
    assert sorted(t.number for t in study.trials) == list(range(4))  # none lost
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert len({tuple(sorted(t.params.items())) for t in study.trials}) == 4  # no point proposed twice
    reports = [json.loads(out) for out, _ in outs]
    workers = [w for r in reports for w in r["workers"]]
    assert len({seed for w in workers for seed in w["trial_seeds"].values()}) == 4  # a stream per trial
    assert sorted(n for w in workers for n in w["trials"]) == list(range(4))  # each trial run by one worker
    client = client_for(mlflow_server)
    exp = client.get_experiment_by_name("distributed")
    trial_runs = client.search_runs([exp.experiment_id], "tags.`rftbench.kind` = 'trial'")
    assert sorted(r.info.run_id for r in trial_runs) == sorted(t.user_attrs["mlflow_run_id"] for t in study.trials)
    assert all(r.info.status == "FINISHED" for r in trial_runs)
    (parent,) = client.search_runs([exp.experiment_id], "tags.`rftbench.kind` = 'study'")
    assert {r.data.tags["mlflow.parentRunId"] for r in trial_runs} == {parent.info.run_id}
    assert {r["parent_run_id"] for r in reports} == {parent.info.run_id}


def _prepare_at_once(barrier, results, workdir: str, cfg: dict, options: dict) -> None:
    """One worker process: wait for the others, then open the study (no trial). Creating an MLflow
    run takes a second here, as on a busy tracking server: the window in which a second worker
    could miss the first one's parent run is wide open."""
    os.chdir(workdir)
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{Path(workdir) / 'mlflow.db'}"
    from mlflow import MlflowClient

    create_run = MlflowClient.create_run

    def slow_create_run(self, *args, **kwargs):
        time.sleep(1.0)
        return create_run(self, *args, **kwargs)

    MlflowClient.create_run = slow_create_run
    from rftbench.config import parse_config
    from rftbench.tuning import TuneOptions, prepare_study

    cfg, options = parse_config(cfg, "race"), TuneOptions(**options)
    barrier.wait(timeout=300)
    results.put(prepare_study(cfg, options).parent_run_id)


@pytest.mark.timeout(900)
def test_workers_starting_at_once_create_one_parent_run(tmp_path, embedded_cache):
    """Four processes open a new study in the same instant: exactly one MLflow parent run is ever
    created (none created and deleted), and all of them and the study record that one."""
    import multiprocessing as mp

    import optuna
    from mlflow.entities import ViewType

    from rftbench.tracking.store import client_for, get_or_create_experiment

    n = 4
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = client_for(uri)  # the store exists, as a tracking server would
    exp_id = get_or_create_experiment(client, "race")
    cfg = tiny_config(experiment="race", schedule={"name": "epsilon_scheduling", "params": {}})
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    optuna.storages.RDBStorage(storage)  # its schema too
    options = {"study": "race", "storage": storage, "sampler": "random", "pruner": "none", "enqueue_defaults": True}
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_prepare_at_once, args=(barrier, results, str(tmp_path),
                                                        cfg.model_dump(mode="json"), options)) for _ in range(n)]
    for p in procs:
        p.start()
    parents = [results.get(timeout=600) for _ in range(n)]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    runs = client.search_runs([exp_id], "tags.`rftbench.kind` = 'study' and tags.`optuna.study` = 'race'",
                              run_view_type=ViewType.ALL)
    assert [r.info.run_id for r in runs] == [parents[0]] and set(parents) == {parents[0]}
    study = optuna.load_study(study_name="race", storage=storage)
    assert study.user_attrs["mlflow_parent_run_id"] == parents[0]
    assert len(study.trials) == 1  # the defaults were enqueued once
