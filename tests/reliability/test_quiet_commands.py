"""No command gives a silently meaningless number or quietly does something else: a fresh head
is not evaluated without --allow-fresh-head; merged records go to their config's experiment;
`train --resume RUN_ID` alone uses the run's own config; resuming a FINISHED run does nothing;
bad storage URLs, output_dir under a file and a missing GPU are refused before any run exists."""
import json

import pytest
import torch
import yaml
from conftest import tiny_config

from rftbench.errors import ConfigError, TrackingError
from rftbench.training.callbacks import PerEpochCallback, TrainingInterrupted


def _write(workdir, cfg, name="c.yaml"):
    (workdir / name).write_text(yaml.safe_dump(cfg.model_dump()))
    return name


def _runs(experiment="tests"):
    from rftbench.tracking.store import client_for

    client = client_for()
    exp = client.get_experiment_by_name(experiment)
    return [] if exp is None else client.search_runs([exp.experiment_id])


def test_evaluating_a_head_never_trained_for_the_dataset_is_refused(workdir, capsys):
    from rftbench.cli import main

    cfg = tiny_config(eval__n_samples=16, eval__num_points=2, eval__checks__probe_samples=4)
    path = _write(workdir, cfg)
    assert main(["evaluate", path, "--shard", "0/4", "--no-log"]) == 2  # the README's example, no --model
    err = capsys.readouterr().err
    assert "no classifier head trained for dataset 'digits'" in err and "--allow-fresh-head" in err
    assert main(["evaluate", path, "--no-log", "--set", "model.pretrained=false"]) == 2
    assert main(["evaluate", path, "--no-log", "--allow-fresh-head", "--json"]) == 0
    # the embedded checkpoint on its own (source) task has a trained head: no flag needed
    assert main(["evaluate", path, "--no-log", "--json", "--set", "data.options.task=source"]) == 0
    assert _runs() == []


def test_merge_logs_to_the_records_experiment(workdir, capsys):
    from rftbench.cli import main

    cfg = tiny_config(experiment="shards-exp", data__options={"task": "source"}, eval__n_samples=16,
                      data__eval_batch_size=8, eval__autoattack__batch_size=8,
                      eval__num_points=2, eval__checks__probe_samples=4)
    path = _write(workdir, cfg)
    for i in range(2):
        assert main(["evaluate", path, "--shard", f"{i}/2", "--out", f"s{i}.json", "--no-log"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "merge", "s0.json", "s1.json", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    runs = _runs("shards-exp")
    assert [r.info.run_id for r in runs] == [out["mlflow_run_id"]]
    assert _runs("rftbench") == []


def _interrupted_run(workdir):
    """A run of 2 epochs (set by overrides) stopped after epoch 1: KILLED, resumable."""
    from rftbench.cli import main

    base = _write(workdir, tiny_config(train__epochs=1))

    def stop(epoch, metrics):
        if epoch == 0:
            raise TrainingInterrupted("stop after epoch 1")

    from rftbench.experiments import experiment

    real = experiment.run_experiment
    experiment.run_experiment = lambda cfg, **kw: real(cfg, callbacks=[PerEpochCallback(stop)], **kw)
    try:
        assert main(["train", base, "--set", "train.epochs=2", "--set", "name=byid", "--no-eval"]) != 0
    finally:
        experiment.run_experiment = real
    (run,) = _runs()
    assert run.info.status == "KILLED"
    return run


def test_resume_by_run_id_alone_uses_the_runs_config_and_overrides(workdir, capsys):
    from rftbench.cli import main

    run = _interrupted_run(workdir)
    capsys.readouterr()
    assert main(["train", "--resume", run.info.run_id, "--no-eval", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["run_id"] == run.info.run_id
    (after,) = _runs()
    assert after.info.status == "FINISHED" and after.info.run_name == "byid"
    assert sorted(m.step for m in _history(after.info.run_id, "train/loss")) == [0, 1]  # 2 epochs, from the overrides


def _history(run_id, key):
    from rftbench.tracking.store import client_for

    return client_for().get_metric_history(run_id, key)


def test_resuming_a_finished_run_says_so_and_does_nothing(workdir, capsys):
    from rftbench.cli import main

    path = _write(workdir, tiny_config(train__epochs=1, eval__n_samples=16, eval__num_points=2,
                                       eval__checks__probe_samples=4))
    assert main(["train", path, "--json"]) == 0
    (run,) = _runs()
    run_dir = json.loads(capsys.readouterr().out)["run_dir"]
    import pathlib

    (pathlib.Path(run_dir) / "state.pt").unlink()  # a missing state.pt must not retrain it from scratch
    n_eval = len(_history(run.info.run_id, "eval/expected_robustness"))
    assert main(["train", path, "--resume", run.info.run_id]) == 0
    assert "FINISHED already" in capsys.readouterr().err
    (after,) = _runs()
    assert after.info.status == "FINISHED" and after.info.end_time == run.info.end_time
    assert len(_history(run.info.run_id, "eval/expected_robustness")) == n_eval == 1
    assert not (pathlib.Path(run_dir) / "state.pt").exists()


def test_bad_storage_output_dir_and_device_are_refused_before_any_run(workdir, monkeypatch):
    from rftbench.experiments.experiment import run_experiment

    with pytest.raises(TrackingError, match="scheme 'htp'"):
        run_experiment(tiny_config(), tracking_uri="htp://localhost:5000")
    (workdir / "afile").write_text("x")
    with pytest.raises(ConfigError, match="afile is a file"):
        run_experiment(tiny_config(output_dir="afile/runs"))
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="train.device 'cuda' is not available"):
            run_experiment(tiny_config(train__device="cuda"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "nosuch://x")
    with pytest.raises(TrackingError, match="scheme 'nosuch'"):
        run_experiment(tiny_config())
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{workdir / 'mlflow.db'}")
    assert _runs() == []


def test_unknown_optuna_storage_scheme_is_refused_before_any_run(workdir, capsys):
    from rftbench.cli import main

    path = _write(workdir, tiny_config())
    assert main(["tune", path, "--trials", "1", "--storage", "nosuch://host/db"]) == 2
    assert "not a database URL SQLAlchemy can open" in capsys.readouterr().err
    assert _runs() == [] and not (workdir / "optuna.db").exists()
