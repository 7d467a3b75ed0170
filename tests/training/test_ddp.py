"""Several processes for one run (torchrun, gloo on CPU): the same losses as one process with the
same global batch, and a resume after the whole job was SIGKILLed."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

CONFIG = {
    "name": "ddp", "experiment": "ddp", "seed": 0, "model": {"name": "small_cnn", "pretrained": True},
    "data": {"name": "digits", "batch_size": 32}, "threat": {"eps": 0.1}, "attack": {"steps": 1},
    "schedule": {"name": "none"},
    "train": {"epochs": 2, "lr": 0.0005, "log_every": 1, "progress": "off", "batchnorm": "frozen"},
    "eval": {"num_points": 2, "sweep_steps": 1, "n_samples": 32, "autoattack": {"enabled": False}},
}


def rftbench(*args, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "rftbench", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=300, **kw)


def losses(run_id: str) -> np.ndarray:
    from rftbench.tracking import client_for

    hist = client_for().get_metric_history(run_id, "train_step/loss")
    return np.array([m.value for m in sorted(hist, key=lambda m: m.step)])


@pytest.mark.slow
def test_two_gloo_ranks_match_one_process(workdir, embedded_cache):
    cfg = workdir / "ddp.yaml"
    cfg.write_text(yaml.safe_dump(CONFIG))
    one = rftbench("train", cfg, "--no-eval", "--json")
    two = rftbench("train", cfg, "--no-eval", "--json", "--nproc", "2")
    assert one.returncode == 0 and two.returncode == 0, two.stderr[-3000:]
    a, b = losses(json.loads(one.stdout)["run_id"]), losses(json.loads(two.stdout)["run_id"])
    assert len(a) == len(b) >= 20
    assert np.max(np.abs(a[:20] - b[:20]) / np.abs(a[:20])) < 1e-4
    assert not np.array_equal(a[:20], a[1:21])  # the losses move: a real comparison


@pytest.mark.slow
def test_ddp_run_resumes_after_sigkill_with_another_rank_count(workdir, embedded_cache):
    from rftbench.tracking import client_for

    cfg = workdir / "ddp.yaml"
    cfg.write_text(yaml.safe_dump({**CONFIG, "schedule": {"name": "linear"}, "train": {
        **CONFIG["train"], "epochs": 4, "checkpoint_every_steps": 3, "log_every": 5}}))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    job = subprocess.Popen([sys.executable, "-m", "rftbench", "train", str(cfg), "--nproc", "2", "--no-eval"],
                           env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and not list(workdir.glob("rftbench-runs/*/state.pt")):
        time.sleep(0.5)
    os.killpg(job.pid, signal.SIGKILL)  # torchrun and both ranks at once
    job.wait()
    (state,) = workdir.glob("rftbench-runs/*/state.pt")
    run_id = state.parent.name
    assert client_for().get_run(run_id).info.status == "RUNNING"  # nobody could end it
    res = rftbench("train", cfg, "--resume", run_id, "--no-eval", "--json")  # one rank this time
    assert res.returncode == 0, res.stderr[-3000:]
    run = client_for().get_run(run_id)
    assert run.info.status == "FINISHED"
    assert json.loads(run.data.tags["rftbench.resumed_from"])["batch"] > 0 or \
        json.loads(run.data.tags["rftbench.resumed_from"])["epoch"] > 0
