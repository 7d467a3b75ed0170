"""rftbench's CPU thread default (:func:`rftbench.training.threads.set_torch_threads`) and ``train.threads``."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch

from conftest import tiny_config
from rftbench.errors import ConfigError
from rftbench.training.threads import busy_cpus, set_torch_threads, threads_rule


@pytest.fixture
def threads_back():
    """Whatever a test sets, the process gets its thread count back."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_the_rule_shares_cores_among_processes_and_leaves_busy_ones_out():
    assert threads_rule(2) == 2
    assert threads_rule(2, busy=1.0) == 1  # one other busy process on 2 cores: one thread
    assert threads_rule(2, busy=0.3) == 2  # a little background work does not take a core
    assert threads_rule(16, processes=4) == 4
    assert threads_rule(16, processes=4, busy=5.6) == 1
    assert threads_rule(2, processes=8) == 1 and threads_rule(1, busy=3.0) == 1


def test_train_threads_is_set_as_asked_and_the_rule_never_raises_the_count(threads_back, monkeypatch):
    assert set_torch_threads(2) == (2, "train.threads") and torch.get_num_threads() == 2
    torch.set_num_threads(1)
    n, why = set_torch_threads(None)
    assert (n, torch.get_num_threads()) == (1, 1) and why == "already one thread"
    torch.set_num_threads(2)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(len(os.sched_getaffinity(0))))  # as many ranks as cores
    n, why = set_torch_threads(0)
    assert (n, torch.get_num_threads()) == (1, 1) and "process(es)" in why


def test_train_threads_is_validated_and_stays_out_of_the_run_identity():
    from rftbench.experiments.gridrun import run_identity

    assert tiny_config(train__threads=3).train.threads == 3
    assert "train.threads" not in tiny_config(train__threads=3).flat()
    assert run_identity(tiny_config(train__threads=3)) == run_identity(tiny_config())
    with pytest.raises(ConfigError, match="train.threads"):
        tiny_config(train__threads=-1)


def test_the_trainer_applies_train_threads(workdir, threads_back):
    from rftbench.task import build_task
    from rftbench.training import Trainer

    cfg = tiny_config(train__threads=2, train__progress="off")
    trainer = Trainer(cfg, build_task(cfg), validate=False)
    assert torch.get_num_threads() == 2 and trainer.threads == 2 and trainer.threads_why == "train.threads"


@pytest.mark.slow
def test_busy_cpus_sees_a_process_burning_a_core():
    cpus = sorted(os.sched_getaffinity(0))
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        busy = busy_cpus(cpus, sample_s=0.5)
    finally:
        burner.kill()
        burner.wait()
    assert busy is not None and busy >= 0.6  # the burner's core (the scheduler may share it with others)
    assert busy_cpus([], sample_s=0.05) == 0.0  # no CPUs asked about: none busy
