"""A study end to end: trials as MLflow child runs linked both ways, one parent run across
resumes, enqueued defaults, the trial cap, show, identity checks, Ctrl-C, several objectives,
a conditional space and retraining the winner."""
import io
import json
import os

import optuna
import pytest
from optuna.trial import TrialState
from rich.console import Console

from conftest import tiny_config
from rftbench.cli import main
from rftbench.cli.tune import _print_best
from rftbench.errors import TuneError
from rftbench.tracking.store import client_for
from rftbench.tuning import TuneOptions, tune
from rftbench.tuning.best import final_config


def _cfg(**kw):
    base = dict(train__epochs=1, train__val_samples=16, attack__steps=1, eval__num_points=2, eval__sweep_steps=1,
                schedule={"name": "epsilon_scheduling", "params": {}})
    return tiny_config(**{**base, **kw})


def _opts(store, study, **kw):
    return TuneOptions(storage=f"sqlite:///{store / 'optuna.db'}", study=study, **{"sampler": "random",
                                                                                    "pruner": "none", **kw})


def _study_parents(client, study):
    exp = client.get_experiment_by_name("tests")
    return client.search_runs([exp.experiment_id], f"tags.`rftbench.kind` = 'study' and tags.`optuna.study` = '{study}'")


def test_study_links_trials_resumes_under_one_parent_and_caps_trials(store):
    cfg = _cfg()
    res = tune(cfg, _opts(store, "main", trials=2, enqueue_defaults=True))
    study = optuna.load_study(study_name="main", storage=res.storage)
    assert study.trials[0].user_attrs["schedule_params"] == {"start": 0.24, "end": 0.74}  # the paper's setting first
    res2 = tune(cfg, _opts(store, "main", trials=2, enqueue_defaults=True, max_trials=3))  # resume, capped
    study = optuna.load_study(study_name="main", storage=res.storage)
    assert [t.number for t in study.trials] == [0, 1, 2] and res2.n_trials == 3
    points = [tuple(t.params.values()) for t in study.trials]
    assert len(set(points)) == 3  # the resumed worker did not replay trial 0 or 1
    client = client_for()
    (parent,) = _study_parents(client, "main")  # one parent run for both runs of the command
    assert study.user_attrs["mlflow_parent_run_id"] == parent.info.run_id == res2.parent_run_id
    for t in study.trials:
        run = client.get_run(t.user_attrs["mlflow_run_id"])
        assert run.data.tags["optuna.trial"] == str(t.number) and run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["rftbench.split"] == "val" and run.data.tags["rftbench.kind"] == "trial"
        assert float(run.data.params["schedule.params.start"]) == t.user_attrs["schedule_params"]["start"]
        assert run.data.metrics["objective/val_er"] == t.value == run.data.metrics["val/expected_robustness"]
        # what optuna-integration's MLflowCallback adds to the same run (its name kept)
        assert run.data.tags["number"] == str(t.number) and run.data.tags["state"] == "COMPLETE"
        assert run.data.tags["mlflow_run_id"] == run.info.run_id and run.info.run_name == f"tiny-trial{t.number}"
        assert run.data.params["start"] == str(t.params["start"]) and run.info.status == "FINISHED"
        assert not any(k.startswith("eval/") for k in run.data.metrics)  # never on a test leaderboard
    arts = {a.path for a in client.list_artifacts(parent.info.run_id, "optuna")}
    for fig in ("optimization_history", "param_importances", "parallel_coordinate", "contour"):
        assert {f"optuna/{fig}.html", f"optuna/{fig}.png"} <= arts, arts
    assert client.get_run(parent.info.run_id).data.metrics["best/val_er"] == max(t.value for t in study.trials)


def test_show_prints_best_importances_and_states(store, capsys):
    import mlflow

    other = f"sqlite:///{store / 'other-mlflow.db'}"
    env = os.environ["MLFLOW_TRACKING_URI"]
    res = tune(_cfg(), _opts(store, "shown", trials=3, visualize=False, tracking_uri=other))
    # the trial runs went to the store asked for, and MLflow's process-wide URI is what it was
    assert client_for(other).get_run(res.trials[0]["mlflow_run_id"]).data.tags["number"] == "0"
    assert os.environ["MLFLOW_TRACKING_URI"] == env == mlflow.get_tracking_uri()
    assert main(["tune", "show", "shown", "--storage", f"sqlite:///{store / 'optuna.db'}", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    study = optuna.load_study(study_name="shown", storage=f"sqlite:///{store / 'optuna.db'}")
    assert out["best_value"] == study.best_value and out["states"] == {"COMPLETE": 3}
    assert set(out["importances"]["val_er"]) == {"start", "length"}
    assert sum(out["importances"]["val_er"].values()) == pytest.approx(1.0)
    assert main(["tune", "show", "nosuch", "--storage", f"sqlite:///{store / 'optuna.db'}"]) == 2
    assert "no study 'nosuch'" in capsys.readouterr().err


def test_a_reused_name_with_another_space_or_direction_is_refused(store):
    tune(_cfg(), _opts(store, "fixed-id", trials=1, visualize=False))
    with pytest.raises(TuneError, match="searched another space"):
        tune(_cfg(schedule={"name": "linear", "params": {}}), _opts(store, "fixed-id", trials=1))
    with pytest.raises(TuneError, match="optimises"):
        tune(_cfg(), _opts(store, "fixed-id", trials=1, objectives=["val_er", "train_compute"]))
    with pytest.raises(TuneError, match="not recorded.*val_er"):
        tune(_cfg(), _opts(store, "other", trials=1, objectives=["test_er"]))
    assert len(optuna.load_study(study_name="fixed-id", storage=f"sqlite:///{store / 'optuna.db'}").trials) == 1


def test_trials_zero_is_refused_by_the_cli(store, capsys):
    cfg_path = store / "t.yaml"
    cfg_path.write_text("name: t\nschedule: {name: linear}\n")
    assert main(["tune", str(cfg_path), "--trials", "0"]) == 2
    assert "at least one trial" in capsys.readouterr().err


def test_ctrl_c_mid_trial_fails_the_trial_kills_its_run_and_the_study_resumes(store, monkeypatch):
    from rftbench.tuning import trial as trial_mod

    def interrupt(self, trainer, epoch, metrics):
        raise KeyboardInterrupt("Ctrl-C")

    monkeypatch.setattr(trial_mod.TrialLink, "on_epoch_end", interrupt)
    with pytest.raises(KeyboardInterrupt):
        tune(_cfg(), _opts(store, "interrupted", trials=2, visualize=False))
    monkeypatch.undo()
    storage = f"sqlite:///{store / 'optuna.db'}"
    (t0,) = optuna.load_study(study_name="interrupted", storage=storage).trials
    assert t0.state == TrialState.FAIL
    client = client_for()
    assert client.get_run(t0.user_attrs["mlflow_run_id"]).info.status == "KILLED"
    tune(_cfg(), _opts(store, "interrupted", trials=1, visualize=False))
    states = [t.state for t in optuna.load_study(study_name="interrupted", storage=storage).trials]
    assert states == [TrialState.FAIL, TrialState.COMPLETE]
    assert len(_study_parents(client, "interrupted")) == 1


def _dominates(a, b, directions):
    better = [(x >= y) if d == "maximize" else (x <= y) for x, y, d in zip(a, b, directions)]
    strictly = [(x > y) if d == "maximize" else (x < y) for x, y, d in zip(a, b, directions)]
    return all(better) and any(strictly)


def test_multi_objective_front_has_no_dominated_point(store, capsys):
    opts = _opts(store, "multi", trials=5, sampler="nsgaii", objectives=["val_er", "val_clean", "train_compute"])
    res = tune(_cfg(), opts)
    assert res.directions == ["maximize", "maximize", "minimize"]
    done = [t for t in res.trials if t["state"] == "COMPLETE"]
    front = [p["values"] for p in res.pareto_front]
    assert front
    for p in front:
        assert not any(_dominates(t["values"], p, res.directions) for t in done)
    # every non-dominated trial is on the front
    for t in done:
        if not any(_dominates(o["values"], t["values"], res.directions) for o in done):
            assert t["values"] in front
    client = client_for()
    arts = {a.path for a in client.list_artifacts(res.parent_run_id, "optuna")}
    assert {"optuna/pareto_front.html", "optuna/pareto_front.png", "optuna/pareto_front.json"} <= arts
    assert main(["tune", "show", "multi", "--storage", res.storage]) == 0
    assert "Pareto front" in capsys.readouterr().out


def test_a_study_across_schedule_families_trains_the_family_it_drew(store):
    cfg = _cfg(search={"schedules": ["linear", "cosine"], "train": {"lr": {"low": 0.005, "high": 0.05}}})
    res = tune(cfg, _opts(store, "families", trials=4, visualize=False))
    client = client_for()
    for t in res.trials:
        fam = t["schedule"]
        assert t["params"]["schedule"] == fam
        assert {k.split(".")[0] for k in t["params"] if k not in ("schedule", "train.lr")} == {fam}
        run = client.get_run(t["mlflow_run_id"])
        assert run.data.params["schedule.name"] == fam
        assert float(run.data.params["train.lr"]) == pytest.approx(t["params"]["train.lr"])


def test_best_retrains_on_train_and_val_and_evaluates_on_test(store, capsys):
    tune(_cfg(), _opts(store, "finish", trials=2, visualize=False))
    code = main(["tune", "best", "finish", "--storage", f"sqlite:///{store / 'optuna.db'}", "--json",
                 "--set", "eval.autoattack.n_samples=8", "--set", "eval.n_samples=32"])
    assert code == 0
    (out,) = json.loads(capsys.readouterr().out)
    study = optuna.load_study(study_name="finish", storage=f"sqlite:///{store / 'optuna.db'}")
    assert out["trial"] == study.best_trial.number
    run = client_for().get_run(out["mlflow_run_id"])
    assert run.data.params["data.val_fraction"] == "0.0" and run.data.params["eval.split"] == "test"
    assert run.data.tags["optuna.trial"] == str(study.best_trial.number)
    assert "eval/acc_autoattack" in run.data.metrics
    assert float(run.data.params["schedule.params.start"]) == study.best_trial.user_attrs["schedule_params"]["start"]


def test_a_study_without_a_recorded_parent_gets_one(store, monkeypatch):
    """Made by plain Optuna (no creator recorded a parent run): after a short wait the first
    worker gives it one, later ones find it; another MLflow store gets its own."""
    from rftbench.tuning import mlflow_link, prepare_study

    monkeypatch.setattr(mlflow_link, "PARENT_WAIT_S", 0.5)
    storage = f"sqlite:///{store / 'optuna.db'}"
    optuna.create_study(study_name="plain", storage=storage, direction="maximize")
    first = prepare_study(_cfg(), _opts(store, "plain")).parent_run_id
    assert prepare_study(_cfg(), _opts(store, "plain")).parent_run_id == first
    (parent,) = _study_parents(client_for(), "plain")
    assert parent.info.run_id == first
    assert optuna.load_study(study_name="plain", storage=storage).user_attrs["rftbench.space"]["space"]
    other = f"sqlite:///{store / 'elsewhere.db'}"
    moved = prepare_study(_cfg(), _opts(store, "plain", tracking_uri=other)).parent_run_id
    assert moved != first and client_for(other).get_run(moved).data.tags["optuna.study"] == "plain"


def test_trials_share_the_eps0_epochs_an_earlier_trial_trained(store):
    """start >= 0.4 of 3 epochs: every trial's first epoch is at eps = 0. Trial 0 trains it,
    trials 1 and 2 restore it; their child runs carry its recorded validation metrics, and
    --no-share-prefix (or another study) trains it again."""
    search = {"params": {"start": {"low": 0.4, "high": 0.6}, "end": {"low": 0.7, "high": 0.9}}}
    cfg = _cfg(train__epochs=3, search=search)
    res = tune(cfg, _opts(store, "shared", trials=3))
    trials = optuna.load_study(study_name="shared", storage=res.storage).trials
    assert [t.user_attrs["epochs_reused"] for t in trials] == [0, 1, 1]
    assert [t.user_attrs["epochs_trained"] for t in trials] == [3, 3, 3]
    assert len({t.intermediate_values[1] for t in trials}) == 1
    assert len({t.intermediate_values[3] for t in trials}) > 1  # their schedules differ afterwards
    client = client_for()
    first = [client.get_metric_history(t.user_attrs["mlflow_run_id"], "val/expected_robustness")[0]
             for t in trials]
    assert {(m.step, m.value) for m in first} == {(0, trials[0].intermediate_values[1])}
    assert len(list((store / cfg.output_dir / "shared-prefix" / "shared").glob("*.pt"))) == 1
    cfg_path = store / "shared.yaml"
    cfg_path.write_text(json.dumps(cfg.model_dump(mode="json")))  # JSON is YAML
    storage = f"sqlite:///{store / 'optuna.db'}"
    assert main(["tune", str(cfg_path), "--study", "shared-off", "--trials", "2", "--no-share-prefix", "--storage",
                 storage, "--sampler", "random", "--pruner", "none", "--json"]) == 0
    off = optuna.load_study(study_name="shared-off", storage=storage).trials
    assert [t.user_attrs["epochs_reused"] for t in off] == [0, 0]
    assert off[0].intermediate_values[1] == trials[0].intermediate_values[1]


def test_a_resume_with_another_training_config_is_refused_naming_the_key(store):
    tune(_cfg(), _opts(store, "setting", trials=1, visualize=False))
    with pytest.raises(TuneError) as err:
        tune(_cfg(train__epochs=2), _opts(store, "setting", trials=1, visualize=False))
    assert "train.epochs: study 1, now 2" in str(err.value) and "--allow-config-change" in str(err.value)
    study = optuna.load_study(study_name="setting", storage=f"sqlite:///{store / 'optuna.db'}")
    assert len(study.trials) == 1  # nothing was trained into the study


def test_an_allowed_change_is_recorded_and_best_retrains_with_each_trials_config(store, capsys):
    storage = f"sqlite:///{store / 'optuna.db'}"
    tune(_cfg(), _opts(store, "changed", trials=1, visualize=False))
    tune(_cfg(train__epochs=2), _opts(store, "changed", trials=1, visualize=False, allow_config_change=True))
    study = optuna.load_study(study_name="changed", storage=storage)
    (change,) = [v for k, v in study.user_attrs.items() if k.startswith("rftbench.config_change.")]
    assert change["changes"] == {"train.epochs": {"study": 1, "now": 2}} and change["from_trial"] == 1
    first, second = study.trials
    assert "config_change" not in first.user_attrs
    assert second.user_attrs["config_changes"] == change["changes"] and second.user_attrs["epochs_trained"] == 2
    assert [final_config(study, t).train.epochs for t in (first, second)] == [1, 2]
    assert main(["tune", "best", "changed", "--storage", storage, "--json",
                 "--set", "eval.autoattack.n_samples=8", "--set", "eval.n_samples=32"]) == 0
    (out,) = json.loads(capsys.readouterr().out)
    trained_with = {0: 1, 1: 2}[out["trial"]]  # the config each trial ran under, not a default config's epochs
    assert client_for().get_run(out["mlflow_run_id"]).data.params["train.epochs"] == str(trained_with)
    shown = Console(file=io.StringIO(), width=300)
    _print_best([out], shown)  # the terminal summary of the same retrain: a table, not a dict
    text = shown.file.getvalue()
    assert out["mlflow_run_id"] in text and f"{out['schedule']}(" in text and "{" not in text
