"""A real tiny study on the embedded default for every sampler and every pruner."""
import optuna
import pytest
from optuna.trial import TrialState

from conftest import tiny_config
from rftbench.tracking.store import client_for
from rftbench.tuning import TuneOptions, tune


def _cfg(**kw):
    base = dict(train__epochs=1, train__val_samples=16, attack__steps=1, eval__num_points=2, eval__sweep_steps=1,
                schedule={"name": "epsilon_scheduling", "params": {}})
    return tiny_config(**{**base, **kw})


@pytest.mark.parametrize("sampler", ["tpe", "random", "cmaes", "gp", "qmc", "grid", "nsgaii"])
def test_each_sampler_runs_a_real_study(store, sampler):
    storage = f"sqlite:///{store / 'optuna.db'}"
    opts = TuneOptions(trials=2, storage=storage, study=sampler, sampler=sampler, pruner="none", grid_points=2,
                       visualize=False)
    res = tune(_cfg(), opts)
    study = optuna.load_study(study_name=sampler, storage=storage)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    assert res.best_value == max(t.value for t in study.trials)
    assert res.workers[0]["trials"] == [0, 1]
    client = client_for()
    assert client.get_run(res.parent_run_id).data.params["sampler"] == sampler
    for t in study.trials:
        run = client.get_run(t.user_attrs["mlflow_run_id"])
        assert run.data.tags["optuna.trial"] == str(t.number)
        assert run.data.metrics["val/expected_robustness"] == pytest.approx(t.value)
        sched = t.user_attrs["schedule_params"]
        # Optuna records the ramp's own coordinates: the trained start, and end as a fraction of the room above it
        assert set(t.params) == {"start", "length"} and sched["start"] == t.params["start"]
        assert sched["start"] <= sched["end"] <= 1.0
    if sampler == "grid":
        grid = {(t.params["start"], t.params["length"]) for t in study.trials}
        assert grid <= {(a, b) for a in (0.0, 1.0) for b in (0.0, 1.0)} and len(grid) == 2


@pytest.mark.parametrize("pruner", ["median", "percentile", "successive_halving", "hyperband", "hyperband_topk",
                                    "wilcoxon"])
def test_each_pruner_sees_per_epoch_values(store, pruner):
    storage = f"sqlite:///{store / 'optuna.db'}"
    opts = TuneOptions(trials=3, storage=storage, study=pruner, sampler="random", pruner=pruner, visualize=False)
    tune(_cfg(train__epochs=2), opts)
    study = optuna.load_study(study_name=pruner, storage=storage)
    assert len(study.trials) == 3
    client = client_for()
    for t in study.trials:
        assert t.state in (TrialState.COMPLETE, TrialState.PRUNED)
        # intermediate values = the per-epoch validation ER the run logged (step = epochs trained)
        history = {m.step + 1: m.value for m in client.get_metric_history(t.user_attrs["mlflow_run_id"],
                                                                       "val/expected_robustness")}
        assert t.intermediate_values == pytest.approx(history)
        assert len(t.intermediate_values) == t.user_attrs["epochs_trained"]
        run = client.get_run(t.user_attrs["mlflow_run_id"])  # pruned ones are linked too
        assert run.info.status == ("KILLED" if t.state == TrialState.PRUNED else "FINISHED")
        assert run.data.tags["state"] == t.state.name  # MLflowCallback's record, in the same run
        if t.state == TrialState.PRUNED:
            assert t.user_attrs["epochs_trained"] < 2 and "rftbench.pruned" in run.data.tags
