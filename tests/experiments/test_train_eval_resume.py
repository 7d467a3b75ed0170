"""`rftbench train`: training finished and the final evaluation killed -> resuming the run
continues the evaluation from its saved blocks, not the training."""
import json
import os
import signal

import numpy as np
import pytest

from conftest import tiny_config
from rftbench.evaluation.state import EvaluationInterrupted
from rftbench.evaluation.evaluate import evaluate_model
from rftbench.experiments.experiment import run_experiment
from rftbench.tracking.store import client_for
from rftbench.training import Callback


def test_killed_final_evaluation_resumes_without_training_again(workdir, monkeypatch):
    import rftbench.experiments.experiment as experiment

    cfg = tiny_config(train__epochs=1, eval__n_samples=24, data__eval_batch_size=8, eval__checks__probe_samples=8)
    plain = experiment.evaluate_model
    seen = []

    def killed_after_one_block(*a, **k):
        def on_block(done, total):
            seen.append(done)
            if done == 1:
                os.kill(os.getpid(), signal.SIGTERM)
        return plain(*a, **{**k, "on_block": on_block})

    monkeypatch.setattr(experiment, "evaluate_model", killed_after_one_block)
    with pytest.raises(EvaluationInterrupted, match="stopped after 1 of 3 blocks"):
        run_experiment(cfg)
    client = client_for()
    run = client.search_runs([client.get_experiment_by_name(cfg.experiment).experiment_id])[0]
    assert run.info.status == "KILLED" and "SIGTERM" in run.data.tags["rftbench.error"]
    rdir = run.data.tags["rftbench.run_dir"]
    assert json.load(open(os.path.join(rdir, "evaluation.state.json")))["blocks"]

    def counting(*a, **k):
        return plain(*a, **{**k, "on_block": lambda d, t: seen.append(d)})

    monkeypatch.setattr(experiment, "evaluate_model", counting)
    seen.clear()
    res = run_experiment(cfg, resume_run_id=run.info.run_id)
    assert res.train.info["resumed_from"] == {"epoch": 1, "batch": 0}  # nothing left to train
    assert seen == [2, 3]  # the evaluation continued after its saved block
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
    from rftbench.task import build_task

    whole = evaluate_model(res.train.model, build_task(cfg).splits.test, cfg, device="cpu", dataset_name="digits",
                           split="test")
    np.testing.assert_array_equal(res.record.samples().sweep_flags, whole.samples().sweep_flags)
    assert res.record["expected_robustness"] == whole["expected_robustness"]
    assert client.get_run(run.info.run_id).data.tags["rftbench.flagged"] == str(res.record["flagged"])


class _KilledAtFirstCheckpoint(Callback):
    """A trainer callback: the process is killed (Ctrl-C) right after the first checkpoint."""

    def on_checkpoint(self, trainer, path):
        raise KeyboardInterrupt


def test_resume_of_a_run_dir_run_whose_tag_was_lost_refuses_then_resumes_with_run_dir(workdir, capsys):
    import yaml

    from rftbench.cli import main
    from rftbench.errors import CheckpointError

    cfg = tiny_config(train__epochs=2)
    run_dir = workdir / "elsewhere"
    with pytest.raises(KeyboardInterrupt):
        run_experiment(cfg, run_dir=run_dir, evaluate=False, callbacks=[_KilledAtFirstCheckpoint()])
    client = client_for()
    (run,) = client.search_runs([client.get_experiment_by_name(cfg.experiment).experiment_id])
    rid = run.info.run_id
    assert run.info.status == "KILLED" and (run_dir / "state.pt").is_file()
    client.delete_tag(rid, "rftbench.run_dir")  # as when the kill came before the tag reached the store
    with pytest.raises(CheckpointError) as info:
        run_experiment(cfg, resume_run_id=rid, evaluate=False)
    msg = str(info.value)
    assert f"run {rid} " in msg and "records no run directory" in msg and "\n" not in msg
    assert f"rftbench train --resume {rid} --run-dir DIR" in msg and str(workdir / cfg.output_dir / rid) in msg
    (workdir / "c.yaml").write_text(yaml.safe_dump(cfg.model_dump()))
    capsys.readouterr()
    assert main(["train", "c.yaml", "--resume", rid, "--no-eval"]) == 2
    err = capsys.readouterr().err
    assert "records no run directory" in err and "--run-dir DIR" in err and "Traceback" not in err
    assert client.get_run(rid).info.status == "KILLED" and not (workdir / cfg.output_dir / rid).exists()
    res = run_experiment(cfg, resume_run_id=rid, run_dir=run_dir, evaluate=False)  # --run-dir DIR wins
    assert res.train.info["resumed_from"] == {"epoch": 1, "batch": 0} and res.run_dir == run_dir.resolve()
    done = client.get_run(rid)
    assert done.info.status == "FINISHED" and done.data.tags["rftbench.run_dir"] == str(run_dir.resolve())


def test_a_run_dir_is_in_the_store_from_the_runs_creation(workdir, monkeypatch):
    import rftbench.experiments.experiment as experiment

    def killed(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(experiment, "_log_run_inputs", killed)  # dies before it logs anything
    cfg = tiny_config(train__epochs=1)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(cfg, run_dir="elsewhere", evaluate=False)
    client = client_for()
    (run,) = client.search_runs([client.get_experiment_by_name(cfg.experiment).experiment_id])
    assert run.data.tags["rftbench.run_dir"] == str((workdir / "elsewhere").resolve())
