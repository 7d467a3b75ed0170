"""A first Optuna study: trials are MLflow runs, the study lives in an RDB storage."""
import optuna

from conftest import tiny_config
from rftbench.tracking import client_for
from rftbench.tune import tune


def test_tune_records_trials_in_sqlite_and_mlflow(workdir):
    storage = f"sqlite:///{workdir / 'optuna.db'}"
    cfg = tiny_config(train__epochs=1, train__val_samples=32, schedule__params={})
    res = tune(cfg, n_trials=2, storage=storage, study_name="s1", sampler="random", pruner="none")
    assert res.n_trials == 2 and len(res.trials) == 2
    study = optuna.load_study(study_name="s1", storage=storage)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    assert res.best_value == max(t.value for t in study.trials)
    client = client_for()
    for t in study.trials:
        run = client.get_run(t.user_attrs["mlflow_run_id"])
        assert run.info.status == "FINISHED"
        assert float(run.data.params["schedule.params.warmup"]) == t.params["warmup"]
        assert run.data.params["eval.split"] == "val"  # tuning never sees the test split
        assert run.data.metrics["val/expected_robustness"] == t.value  # validation metrics never under eval/*
        assert not any(k.startswith("eval/") for k in run.data.metrics)
    # a second worker joins the same study
    res2 = tune(cfg, n_trials=1, storage=storage, study_name="s1", sampler="random", pruner="none")
    assert res2.n_trials == 3
