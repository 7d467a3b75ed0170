"""Shared fixtures: every test gets its own MLflow store, cache and working directory."""
from __future__ import annotations

import inspect
import os
import re
import warnings

import pytest
import torch

warnings.filterwarnings("ignore", message=".*SQLAlchemy.*", category=DeprecationWarning)
# one thread: the toy models here are too small to gain from more, and under load
# (several test processes) extra threads cost far more than they give
torch.set_num_threads(1)


_SIGNAL_WORDS = re.compile(r"\bSIG(TERM|INT|KILL|USR[12])\b|signal\.|os\.kill|raise_signal")


def pytest_collection_modifyitems(items):
    """Mark ``signals`` every test whose own code sends or handles a signal (``make test-repeat``
    reruns them with the ``slow`` ones): the mark follows the code, so no test can forget it."""
    for item in items:
        fn = getattr(item, "function", None)
        try:
            src = inspect.getsource(fn) if fn is not None else ""
        except (OSError, TypeError):
            src = ""
        if _SIGNAL_WORDS.search(src):
            item.add_marker(pytest.mark.signals)


@pytest.fixture(scope="session")
def embedded_cache(tmp_path_factory):
    """One pretrained-checkpoint cache shared by the whole session (pretraining takes ~10 s)."""
    d = tmp_path_factory.mktemp("rftbench-cache")
    old = os.environ.get("RFTBENCH_CACHE")
    os.environ["RFTBENCH_CACHE"] = str(d)
    yield d
    if old is None:
        os.environ.pop("RFTBENCH_CACHE", None)
    else:
        os.environ["RFTBENCH_CACHE"] = old


@pytest.fixture
def workdir(tmp_path, monkeypatch, embedded_cache):
    """A fresh working directory with its own SQLite MLflow store."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    return tmp_path


@pytest.fixture(scope="module")
def store(request, tmp_path_factory, embedded_cache):
    """One working directory with its own SQLite MLflow store for a whole test module (creating
    a fresh MLflow database costs seconds; an Optuna storage can live beside it): the directory."""
    d = tmp_path_factory.mktemp(request.module.__name__.rpartition(".")[2])
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(d)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{d / 'mlflow.db'}")
        yield d


def tiny_config(**overrides):
    """A toy-size experiment on the embedded digits (seconds on 2 cores)."""
    from rftbench.config import parse_config

    base = {
        "name": "tiny", "experiment": "tests", "seed": 0,
        "model": {"name": "small_cnn", "pretrained": True},
        "data": {"name": "digits", "batch_size": 64},
        "threat": {"eps": 0.2},
        "attack": {"steps": 2},
        "schedule": {"name": "linear", "params": {"warmup": 0.5}},
        "train": {"epochs": 2, "lr": 0.02},
        "eval": {"num_points": 3, "sweep_steps": 3, "n_samples": 64,
                 "autoattack": {"enabled": False, "n_samples": 16}},
    }
    for key, value in overrides.items():
        node = base
        parts = key.split("__")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return parse_config(base, "tests")
