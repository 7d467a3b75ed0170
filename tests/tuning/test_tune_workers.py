"""`tune --workers N` through the local launcher: a worker that dies fails alone; the others
finish their trials in the shared study and the command says which worker died."""
from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from conftest import tiny_config
from rftbench.errors import TuneError
from rftbench.tuning import TuneOptions, tune

FAULT = str(Path(__file__).resolve().parents[1] / "launch" / "fault_schedule.py")


@pytest.mark.slow
def test_a_dying_tune_worker_leaves_the_other_to_finish(workdir, monkeypatch):
    marker = workdir / "kill-once"
    marker.write_text("")
    monkeypatch.setenv("RFTBENCH_TEST_KILL_MARKER", str(marker))  # the first trial past half-way SIGKILLs itself
    cfg = tiny_config(plugins=[FAULT], schedule={"name": "fault", "params": {"mode": 2}},
                      search={"train": {"lr": {"low": 0.01, "high": 0.03}}}, train__epochs=1,
                      train__val_samples=16, attack__steps=1, eval__num_points=2, eval__sweep_steps=1)
    storage = f"sqlite:///{workdir / 'optuna.db'}"
    opts = TuneOptions(trials=2, storage=storage, study="w", sampler="random", pruner="none", workers=2,
                       visualize=False)
    with pytest.raises(TuneError, match=r"1 of 2 tune workers failed \(worker \d: worker process killed by SIGKILL"):
        tune(cfg, opts)
    assert not marker.exists()
    states = sorted(t.state.name for t in optuna.load_study(study_name="w", storage=storage).trials)
    assert states == ["COMPLETE", "COMPLETE", "RUNNING"]  # the dead worker's trial is left RUNNING
