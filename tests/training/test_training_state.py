"""The resumable state file and the batch geometry: round trip, safety on load, old files,
dropped single-sample batches and accumulation weights."""
import json
import random

import numpy as np
import pytest
import torch

from conftest import tiny_config
from rftbench.errors import CheckpointError
from rftbench.training import BatchPlan, TrainingState
from rftbench.training.state import resume_config, rng_state, set_rng_state


def _state(**kw):
    base = dict(model={"w": torch.arange(4.0)}, optimizer={"state": {}, "param_groups": []}, lr_schedule={},
                rng=rng_state(), epoch=1, batch=3, opt_steps=8, history=[{"epoch": 0, "train/loss": 0.5}])
    base.update(kw)
    return TrainingState(**base)


def test_round_trip_is_atomic_and_weights_only(tmp_path):
    path = _state(config=json.dumps(resume_config(tiny_config()))).save(tmp_path / "run" / "state.pt")
    assert not path.with_name("state.pt.tmp").exists()
    back = TrainingState.load(path, tiny_config())
    assert (back.epoch, back.batch, back.opt_steps) == (1, 3, 8) and torch.equal(back.model["w"], torch.arange(4.0))
    assert back.history == [{"epoch": 0, "train/loss": 0.5}]
    # the file is a plain dict: torch.load(weights_only=True) reads it without any rftbench class
    assert torch.load(path, weights_only=True)["epoch"] == 1


def test_load_refuses_a_corrupt_a_foreign_and_a_differently_configured_file(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="Delete it"):
        TrainingState.load(bad)
    torch.save({"weights": torch.zeros(2)}, bad)
    with pytest.raises(CheckpointError, match="not an rftbench training state"):
        TrainingState.load(bad)
    path = _state(config=json.dumps(resume_config(tiny_config()))).save(tmp_path / "state.pt")
    TrainingState.load(path, tiny_config(train__progress="plain", eval__num_points=4))  # may differ
    with pytest.raises(CheckpointError, match=r"threat\.eps: 0\.2 -> 0\.1"):
        TrainingState.load(path, tiny_config(threat={"eps": 0.1}))


def test_an_older_file_without_config_or_step_count_still_loads(tmp_path):
    old = {k: v for k, v in vars(_state()).items() if k not in ("config", "opt_steps", "epoch_meter", "batch")}
    torch.save(old, tmp_path / "state.pt")
    st = TrainingState.load(tmp_path / "state.pt", tiny_config())
    assert st.batch == 0 and st.opt_steps is None and st.config == ""


def test_rng_state_round_trip():
    state = rng_state()
    draws = (torch.rand(3), random.random(), np.random.rand())
    set_rng_state(state)
    again = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(draws[0], again[0]) and draws[1:] == again[1:]


def test_batch_plan_drops_a_single_sample_batch_and_weights_accumulation_groups():
    plan = BatchPlan(n_train=129, batch_size=64, accum=1, epochs=2)
    assert plan.drop_last and plan.steps_per_epoch == 2 and plan.total_steps == 4
    assert plan.loss_weight(0) is None and plan.group_end(0)
    plan = BatchPlan(n_train=200, batch_size=64, accum=3, epochs=1)  # batches 64, 64, 64, 8
    assert [plan.size_of(b) for b in range(4)] == [64, 64, 64, 8] and plan.opt_steps_per_epoch == 2
    assert [plan.group_end(b) for b in range(4)] == [False, False, True, True]
    assert [plan.loss_weight(b) for b in range(4)] == pytest.approx([1 / 3, 1 / 3, 1 / 3, 1.0])
    plan = BatchPlan(n_train=100, batch_size=32, accum=2, epochs=1)  # 32, 32, 32, 4
    assert [plan.loss_weight(b) for b in range(4)] == pytest.approx([0.5, 0.5, 32 / 36, 4 / 36])
