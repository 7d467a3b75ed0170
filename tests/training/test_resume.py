"""Recovery: a training subprocess SIGKILLed mid-epoch, then resumed, ends with weights
bit-identical to an uninterrupted run; the killed MLflow run is marked stale, then FINISHED."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import tiny_config
from rftbench.cli import main
from rftbench.errors import CheckpointError
from rftbench.experiments.experiment import run_experiment
from rftbench.tracking.recovery import find_stale_runs, mark_stale_runs
from rftbench.tracking.store import client_for
from rftbench.training import TrainingState, train

REPO = Path(__file__).resolve().parents[2]

# `rftbench train CONFIG --no-eval`, slowed down (0.5 s per batch) so that signals land mid-epoch
CHILD = r"""
import pathlib, sys, time, torch
torch.set_num_threads(1)
import rftbench.training.trainer
from rftbench.cli import main
from rftbench.training import TrainProgress

class Slow(TrainProgress):
    def advance(self, done_steps):
        pathlib.Path("started").touch()
        time.sleep(0.5)

rftbench.training.trainer.make_progress = lambda mode: Slow()
sys.exit(main(["train", sys.argv[1], "--no-eval"]))
"""


def _start_child(workdir, cfg):
    path = workdir / "c.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump()))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-c", CHILD, str(path)], cwd=workdir, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait_for(child, found, what):
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and child.poll() is None:
        hits = found()
        if hits:
            return hits
        time.sleep(0.05)
    child.kill()
    pytest.fail(f"{what} never appeared; child stderr: {child.communicate()[1].decode()[-2000:]}")


@pytest.fixture
def one_thread():
    """Bit-identity needs the same intra-op thread count in every process of the comparison."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _cfg(**kw):
    base = dict(data__val_fraction=0.5, attack__steps=2, train__epochs=2, train__val_samples=32,
                train__checkpoint_every_steps=2, train__log_every=2, train__progress="off",
                train__val_every=1, eval__n_samples=32)
    base.update(kw)
    return tiny_config(**base)


@pytest.mark.slow  # a training subprocess
def test_sigkilled_run_resumes_bit_identical_and_ends_finished(workdir, one_thread, capsys):
    cfg = _cfg()
    child = _start_child(workdir, cfg)
    states = _wait_for(child, lambda: list((workdir / "rftbench-runs").glob("*/state.pt")), "a checkpoint")
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    killed = TrainingState.load(states[0])
    assert killed.epoch == 0 and killed.batch in (2, 4)  # a mid-epoch checkpoint
    run_id = states[0].parent.name

    client = client_for()
    assert client.get_run(run_id).info.status == "RUNNING"  # a SIGKILLed process cannot end its run
    assert [s.run_id for s in find_stale_runs("tests")] == [run_id]
    assert main(["runs", "mark-stale", "--experiment", "tests", "--dry-run", "--json"]) == 0
    assert [s["run_id"] for s in json.loads(capsys.readouterr().out)] == [run_id]
    assert client.get_run(run_id).info.status == "RUNNING"
    mark_stale_runs("tests")
    run = client.get_run(run_id)
    assert run.info.status == "KILLED" and f"--resume {run_id}" in run.data.tags["rftbench.error"]

    resumed = run_experiment(cfg, resume_run_id=run_id, evaluate=False)
    assert resumed.train.info["resumed_from"] == {"epoch": 0, "batch": killed.batch}
    assert resumed.run_dir == states[0].parent
    assert client.get_run(run_id).info.status == "FINISHED"

    # the uninterrupted reference validates only at the end: validation must not change training
    reference = run_experiment(_cfg(train__val_every=2, train__checkpoint_every_steps=0), evaluate=False)
    a, b = resumed.train.model.net.state_dict(), reference.train.model.net.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    keys = ("train/loss", "train/acc_clean", "train/acc_adv", "train/eps", "train/lr")
    assert ([{k: h.get(k) for k in keys} for h in resumed.train.history]
            == [{k: h.get(k) for k in keys} for h in reference.train.history])
    assert resumed.train.attack_steps == reference.train.attack_steps

    # per-step metrics of the reference run: every 2 batches, eps from the schedule, cosine LR
    ref_id, spe = reference.run_id, reference.train.info["steps_per_epoch"]
    total = 2 * spe
    hist = {m.step: m.value for m in client.get_metric_history(ref_id, "train_step/eps")}
    assert sorted(hist) == list(range(2, total + 1, 2))
    for step, value in hist.items():
        assert value == pytest.approx(0.2 * min((step - 1) / total / 0.5, 1.0))
    import math

    for m in client.get_metric_history(ref_id, "train_step/lr"):
        assert m.value == pytest.approx(0.02 * 0.5 * (1 + math.cos(math.pi * m.step / total)), abs=1e-9)
    assert all(m.value > 0 for m in client.get_metric_history(ref_id, "train_step/images_per_s"))
    assert [m.step for m in client.get_metric_history(ref_id, "train/loss")] == [0, 1]
    tags = client.get_run(ref_id).data.tags
    assert int(tags["rftbench.pid"]) == os.getpid() and float(tags["rftbench.heartbeat"]) > time.time() - 600


def test_resume_refuses_a_different_config_and_a_corrupt_checkpoint(workdir, tmp_path):
    cfg = _cfg(train__epochs=1, train__val_every=0, train__checkpoint_every_steps=0)
    first = train(cfg, run_dir=tmp_path / "run")
    # keys that do not change training may differ (device, progress, logging, evaluation)
    again = train(_cfg(train__epochs=1, train__val_every=0, train__progress="plain", train__log_every=0,
                       eval__num_points=4), run_dir=tmp_path / "run", resume=True)
    assert again.info["resumed_from"] == {"epoch": 1, "batch": 0}
    for k, v in first.model.net.state_dict().items():
        assert torch.equal(v, again.model.net.state_dict()[k])
    with pytest.raises(CheckpointError, match=r"train\.lr: 0\.02 -> 0\.05"):
        train(_cfg(train__epochs=1, train__lr=0.05), run_dir=tmp_path / "run", resume=True)
    (tmp_path / "run" / "state.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="Delete it"):
        train(cfg, run_dir=tmp_path / "run", resume=True)


@pytest.mark.slow  # a training subprocess (tests/training/test_callbacks.py checks the same in-process)
def test_sigterm_checkpoints_at_the_next_step_and_ends_the_run_killed(workdir):
    child = _start_child(workdir, _cfg(train__checkpoint_every_steps=0))  # epoch-end checkpoints only
    _wait_for(child, lambda: (workdir / "started").exists(), "training")
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate(timeout=120)
    assert child.returncode == 130, err.decode()[-2000:]
    assert "interrupted: SIGTERM received" in err.decode() and "Traceback" not in err.decode()
    (state_path,) = (workdir / "rftbench-runs").glob("*/state.pt")
    state = TrainingState.load(state_path)
    assert state.epoch == 0 and 1 <= state.batch < 5  # saved mid-epoch, right after the signal
    client = client_for()
    run = client.get_run(state_path.parent.name)
    assert run.info.status == "KILLED" and "SIGTERM" in run.data.tags["rftbench.error"]
