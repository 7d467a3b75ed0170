"""Several processes for one run (torchrun, gloo on CPU): the same losses as one process with the
same global batch, the PGD attack included; a rank that dies ends the run KILLED, and it resumes;
a resume after the whole job was SIGKILLed; a rank that fails alone ends it FAILED with its error."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

# batch 37: the two ranks' slices differ by one sample; linear schedule: eps 0 at the first step,
# then PGD with a random start at an eps that follows the global step
CONFIG = {
    "name": "ddp", "experiment": "ddp", "seed": 0, "model": {"name": "small_cnn", "pretrained": True},
    "data": {"name": "digits", "batch_size": 37}, "threat": {"eps": 0.1}, "attack": {"steps": 2},
    "schedule": {"name": "linear"},
    "train": {"epochs": 2, "lr": 0.0005, "log_every": 1, "progress": "off", "batchnorm": "frozen",
              "log_mlflow_model": False},
    "eval": {"num_points": 2, "sweep_steps": 1, "n_samples": 32, "autoattack": {"enabled": False}},
}
FLOAT64_MODELS = """
from rftbench.models import create_model
from rftbench.models.core import MODEL_FAMILIES


@MODEL_FAMILIES.register("f64")
def f64_model(rest, num_classes, *, pretrained, weights, kwargs):
    return create_model(rest, num_classes, pretrained=pretrained, weights=weights, kwargs=kwargs).double()
"""


def rftbench(*args, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "rftbench", *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=300, **kw)


def history(run_id: str, key: str) -> list[tuple[int, float]]:
    from rftbench.tracking.store import client_for

    return sorted((m.step, m.value) for m in client_for().get_metric_history(run_id, key))


def step_losses(cfg: Path, nproc: int) -> tuple[np.ndarray, str]:
    """``train_step/loss`` of every step of a run of ``cfg`` on ``nproc`` processes, and the dtype
    its weights trained in (from the final ``model.safetensors``)."""
    from safetensors import safe_open

    res = rftbench("train", cfg, "--no-eval", "--json", *(["--nproc", nproc] if nproc > 1 else []))
    assert res.returncode == 0, res.stderr[-3000:]
    run_id = json.loads(res.stdout)["run_id"]
    assert history(run_id, "train/attack_fraction")[0][1] > 0.9  # the attack ran (all but the eps-0 step)
    with safe_open(str(cfg.parent / "rftbench-runs" / run_id / "model.safetensors"), "np") as f:
        (dtype,) = {str(f.get_tensor(k).dtype) for k in f.keys() if f.get_tensor(k).dtype.kind == "f"}
    return np.array([v for _, v in history(run_id, "train_step/loss")]), dtype


def max_rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b) / np.abs(b)))


@pytest.mark.slow
def test_two_gloo_ranks_match_one_process_with_the_attack(workdir, embedded_cache):
    """With float64 weights (a test plugin) 2 ranks give 1 process's losses up to rounding (measured
    4e-16 over all 32 steps; the issue asks 1e-4): each rank attacks its rows from the random start
    one process draws for the whole batch, uneven slices weigh by their size, eps follows the
    global step. In float32 (the default) rounding flips a PGD sign step now and then, and the
    losses then wander; 2 ranks stay as close to the float64 run as 1 float32 process does
    (measured over the first 20 steps: 0.4% and 0.9%); the bound is a multiple of float32's eps."""
    (workdir / "f64.py").write_text(FLOAT64_MODELS)
    cfg32, cfg64 = workdir / "ddp32.yaml", workdir / "ddp64.yaml"
    cfg32.write_text(yaml.safe_dump(CONFIG))
    cfg64.write_text(yaml.safe_dump({**CONFIG, "model": {**CONFIG["model"], "name": "f64:small_cnn"},
                                     "plugins": ["f64.py"]}))
    (one64, dt1), (two64, dt2) = step_losses(cfg64, 1), step_losses(cfg64, 2)
    assert dt1 == dt2 == "float64"
    assert len(one64) == len(two64) >= 20
    assert max_rel(two64[:20], one64[:20]) < 1e-9
    assert not np.array_equal(one64[:20], one64[1:21])  # the losses move: a real comparison
    (one32, dt1), (two32, dt2) = step_losses(cfg32, 1), step_losses(cfg32, 2)
    assert dt1 == dt2 == "float32"  # (the distance from float64 itself is a CPU property: 2.5e-7 to 0.9%)
    assert not np.array_equal(two32[:20], two32[1:21])
    # float32 rounding (eps 1.2e-7) flips a PGD sign step now and then and the losses wander from
    # there (measured up to 0.9% in 20 steps): 2**18 eps (3.1%) bounds that, 1 process or 2 ranks
    tol = 2**18 * float(np.finfo(np.float32).eps)
    assert max_rel(one32[:20], one64[:20]) < tol and max_rel(two32[:20], one64[:20]) < tol


def ranks_of(launcher_pid: int) -> dict[int, int]:
    """{rank: pid} of the worker processes torch elastic started from ``launcher_pid`` (Linux /proc)."""
    out = {}
    for p in Path("/proc").iterdir():
        try:
            stat = (p / "stat").read_text()
            if not p.name.isdigit() or int(stat[stat.rfind(")") + 2:].split()[1]) != launcher_pid:
                continue
            env = dict(e.split(b"=", 1) for e in (p / "environ").read_bytes().split(b"\0") if b"=" in e)
            out[int(env[b"RANK"])] = int(p.name)
        except (OSError, KeyError, ValueError):
            continue
    return out


@pytest.fixture
def jobs():
    """Launchers started by a test; whatever of them (and their ranks) still runs at its end is killed."""
    started: list[subprocess.Popen] = []
    yield started
    for job in started:
        if job.poll() is None:  # (a finished launcher's pid may belong to another process by now)
            for pid in (*ranks_of(job.pid).values(), job.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            job.wait()


def start_two_ranks(workdir: Path, jobs: list) -> tuple[subprocess.Popen, Path, str, dict[int, int]]:
    """``rftbench train --nproc 2`` of a 4-epoch run, once epoch 0's metrics are in MLflow and a
    checkpoint is written: (the launcher, the config, the run id, {rank: pid})."""
    from rftbench.tracking.store import client_for

    cfg = workdir / "ddp.yaml"
    cfg.write_text(yaml.safe_dump({**CONFIG, "train": {**CONFIG["train"], "epochs": 4, "checkpoint_every_steps": 3,
                                                       "log_every": 5}}))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(workdir / "job.err", "w") as err:
        job = subprocess.Popen([sys.executable, "-m", "rftbench", "train", str(cfg), "--nproc", "2", "--no-eval"],
                               env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=err)
    jobs.append(job)
    deadline = time.time() + 240
    while time.time() < deadline:
        states = list(workdir.glob("rftbench-runs/*/state.pt"))
        if states and client_for().get_metric_history(states[0].parent.name, "train/loss"):
            return job, cfg, states[0].parent.name, ranks_of(job.pid)
        assert job.poll() is None, (workdir / "job.err").read_text()[-3000:]
        time.sleep(0.5)
    raise AssertionError("the DDP job wrote no checkpoint after its first epoch within 240 s")


def gone(pid: int) -> bool:
    """Whether process ``pid`` has ended (exited, or a zombie nobody reaped yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rfind(")") + 2] == "Z"


def wait_until_gone(pids, timeout_s: float = 60) -> None:
    """Wait for processes ``pids`` to end; SIGKILL and fail on those still running after ``timeout_s``."""
    deadline = time.time() + timeout_s
    while not all(gone(pid) for pid in pids) and time.time() < deadline:
        time.sleep(0.2)
    left = [pid for pid in pids if not gone(pid)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"processes {left} outlived their job"


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="finds the ranks' pids in /proc")
@pytest.mark.parametrize("victim,resume_nproc", [(1, 2), (0, 1)])
def test_a_rank_that_dies_ends_the_run_killed_and_it_resumes(workdir, embedded_cache, jobs, victim, resume_nproc):
    """SIGKILL one rank: torchrun stops the other, and the run ends KILLED whichever rank died
    (rank 0 ends it when rank 1 died; the launching process when rank 0 did); ``--resume``
    continues it from its checkpoint to FINISHED."""
    from rftbench.tracking.store import client_for

    job, cfg, run_id, ranks = start_two_ranks(workdir, jobs)
    assert sorted(ranks) == [0, 1]
    os.kill(ranks[victim], signal.SIGKILL)
    assert job.wait(timeout=120) != 0
    wait_until_gone(ranks.values())
    run = client_for().get_run(run_id)
    assert run.info.status == "KILLED"
    assert f"rank {victim}" in run.data.tags["rftbench.error"] and "--resume" in run.data.tags["rftbench.error"]
    res = rftbench("train", cfg, "--resume", run_id, "--no-eval", "--json", "--nproc", resume_nproc)
    assert res.returncode == 0, res.stderr[-3000:]
    assert client_for().get_run(run_id).info.status == "FINISHED"
    epochs = [step for step, _ in history(run_id, "train/loss")]
    assert sorted(set(epochs)) == [0, 1, 2, 3] and epochs.count(0) == 1  # epoch 0 trained once: resumed


@pytest.mark.slow
def test_ddp_run_resumes_after_sigkill_with_another_rank_count(workdir, embedded_cache, jobs):
    from rftbench.tracking.store import client_for

    job, cfg, run_id, ranks = start_two_ranks(workdir, jobs)
    os.killpg(job.pid, signal.SIGKILL)  # the launcher; torchrun started the ranks in sessions of their own
    job.wait()
    wait_until_gone(ranks.values())  # they SIGKILL themselves once their launcher is gone
    # nobody could end the run, unless rank 0 saw rank 1 go first (RankLost: KILLED)
    assert client_for().get_run(run_id).info.status in ("RUNNING", "KILLED")
    res = rftbench("train", cfg, "--resume", run_id, "--no-eval", "--json")  # one rank this time
    assert res.returncode == 0, res.stderr[-3000:]
    run = client_for().get_run(run_id)
    assert run.info.status == "FINISHED"
    assert json.loads(run.data.tags["rftbench.resumed_from"])["batch"] > 0 or \
        json.loads(run.data.tags["rftbench.resumed_from"])["epoch"] > 0


FAILS_ON_RANK_1 = """
import os
from rftbench.scheduling import Schedule, register_schedule


@register_schedule("fails_on_rank_1")
class FailsOnRank1(Schedule):
    params = ()

    def alpha(self, progress):
        if os.environ.get("RANK") == "1" and progress > 0.3:
            raise ValueError("this schedule broke on rank 1")
        return progress
"""


def failing_config(workdir: Path, **train) -> Path:
    """``CONFIG`` with the schedule plugin that raises on rank 1 only (``train`` overrides)."""
    (workdir / "failing.py").write_text(FAILS_ON_RANK_1)
    cfg = workdir / "ddp.yaml"
    cfg.write_text(yaml.safe_dump({**CONFIG, "plugins": [str(workdir / "failing.py")],
                                   "schedule": {"name": "fails_on_rank_1"}, "train": {**CONFIG["train"], **train}}))
    return cfg


@pytest.mark.slow
def test_a_rank_that_fails_alone_ends_the_run_failed_every_time(workdir, embedded_cache):
    """Rank 1 raises an error of its own (rank 0 is fine): whether rank 0 reads rank 1's failure
    record before torchrun's SIGTERM reaches it, or the launching process ends the run, it ends
    FAILED (not KILLED) with rank 1's error in its error tag, launch after launch: 3 in a row here
    ($RFTBENCH_TEST_LAUNCHES; `make test-repeat` asks 10 in every round). One epoch, no
    evaluation: each launch is mostly start-up. The race itself is decided by
    ``Trainer._peer_stop``, tested for both orders below."""
    from rftbench.tracking.store import client_for

    cfg = failing_config(workdir, epochs=1)
    for i in range(int(os.environ.get("RFTBENCH_TEST_LAUNCHES", "3"))):
        res = rftbench("train", cfg, "--no-eval", "--nproc", 2)
        assert res.returncode != 0
        runs = client_for().search_runs([client_for().get_experiment_by_name("ddp").experiment_id],
                                        order_by=["attributes.start_time DESC"])
        assert len(runs) == i + 1
        error = runs[0].data.tags.get("rftbench.error", "")
        assert runs[0].info.status == "FAILED", f"launch {i}: {runs[0].info.status}: {error}"
        assert "rank 1: ValueError: this schedule broke on rank 1" in error, f"launch {i}: {error}"


def test_a_stopped_rank_0_reads_the_failure_records_first(tmp_path, monkeypatch):
    """Rank 0's verdict on what stopped it, whether a collective failed or torchrun's SIGTERM came
    first: RankFailedError (the run ends FAILED) as soon as rank 1 recorded an error; a stop with no
    record stays a stop (KILLED). Its signal handlers stay installed while it ends the run."""
    from types import SimpleNamespace

    from rftbench.errors import RankFailedError
    from rftbench.training import distributed as ddp
    from rftbench.training.callbacks import TrainingInterrupted
    from rftbench.training.trainer import Trainer

    monkeypatch.delenv(ddp.RUN_ID_FILE_ENV, raising=False)
    rank0 = SimpleNamespace(run_dir=tmp_path, dist=ddp.DistInfo(0, 2))
    stop = TrainingInterrupted("SIGTERM received: training stopped")
    assert Trainer._peer_stop(rank0, stop) is None
    ddp.record_failure(tmp_path, 1, ValueError("this schedule broke on rank 1"))
    for exc in (stop, KeyboardInterrupt("second SIGTERM"), RuntimeError("gloo: connection closed")):
        verdict = Trainer._peer_stop(rank0, exc)
        assert isinstance(verdict, RankFailedError), exc
        assert str(verdict).startswith("rank 1: ValueError: this schedule broke on rank 1")

    signals = ddp.DistributedSignalStop()
    signals.on_run_start(None)
    try:
        signals.on_exception(None, verdict)
        assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None)  # else the SIGTERM below kills pytest
        os.kill(os.getpid(), signal.SIGTERM)  # torchrun's, while rank 0 ends the run
        time.sleep(0.05)
        assert signals.requested == "SIGTERM"
    finally:
        signals._signals.restore()
