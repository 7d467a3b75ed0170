"""Evaluation is interruptible and resumable: SIGTERM stops it at a block boundary with the
finished blocks saved; resuming gives exactly the numbers of an uninterrupted evaluation."""
import json
import os
import signal

import numpy as np
import pytest
import yaml

from eval_helpers import source_setup
from rftbench.cli import main
from rftbench.errors import RecordError
from rftbench.evaluation.state import EvaluationInterrupted
from rftbench.evaluation.evaluate import evaluate_model

KW = dict(device="cpu", dataset_name="digits", split="test")


def _numbers(rec):
    """Everything the evaluation computed (not its timings, nor the MLflow experiment the CLI notes)."""
    return json.loads(json.dumps({k: v for k, v in rec.data.items() if k not in ("timings", "experiment")}))


def sigterm_after(n_blocks):
    def on_block(done, total):
        if done == n_blocks:
            os.kill(os.getpid(), signal.SIGTERM)  # the real signal: the handler asks for a stop
    return on_block


@pytest.fixture(scope="module")
def setup(embedded_cache):
    # 24 samples in blocks of 8; AutoAttack (16) and the probe (12) cross block boundaries
    return source_setup(eval__n_samples=24, threat__eps=0.07, eval__num_points=3, eval__restarts=2,
                        eval__random_start=True, eval__checks__probe_samples=12, data__eval_batch_size=8,
                        eval__autoattack__batch_size=8, eval__autoattack__enabled=True,
                        eval__autoattack__n_samples=16, eval__autoattack__version="custom",
                        eval__autoattack__attacks=["apgd-ce", "apgd-t"])


def test_interrupt_then_resume_equals_uninterrupted(setup, tmp_path):
    cfg, model, test = setup
    whole = evaluate_model(model, test, cfg, **KW)
    state = tmp_path / "eval.state.json"
    with pytest.raises(EvaluationInterrupted, match=r"SIGTERM received: evaluation stopped after 1 of 3 blocks"):
        evaluate_model(model, test, cfg, state_path=state, on_block=sigterm_after(1), **KW)
    saved = json.loads(state.read_text())
    assert len(saved["blocks"]) == 1 and not list(tmp_path.glob("*.tmp*"))  # written atomically
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handlers are restored
    seen = []
    resumed = evaluate_model(model, test, cfg, state_path=state, on_block=lambda d, t: seen.append(d), **KW)
    assert seen == [2, 3]  # only the blocks not saved ran
    assert not state.exists()
    a, b = resumed.samples(), whole.samples()
    for name in ("indices", "labels", "sweep_flags", "aa_broken_by", "probe_raw", "probe_large"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert _numbers(resumed) == _numbers(whole)
    assert 0 < whole["sweep"]["accuracy"][-1] < whole["clean_accuracy"]


def test_a_state_of_another_evaluation_is_refused(setup, tmp_path):
    cfg, model, test = setup
    state = tmp_path / "s.json"
    with pytest.raises(EvaluationInterrupted):
        evaluate_model(model, test, cfg, state_path=state, on_block=sigterm_after(1), with_autoattack=False, **KW)
    other = cfg.model_copy(deep=True)
    other.eval.sweep_steps = 4
    with pytest.raises(RecordError, match="belongs to another evaluation"):
        evaluate_model(model, test, other, state_path=state, with_autoattack=False, **KW)


def test_cli_interrupt_exits_130_run_killed_and_resume_completes(setup, workdir, capsys, monkeypatch):
    import rftbench.experiments.experiment as experiment
    from rftbench.evaluation.records import EvaluationRecord
    from rftbench.tracking.store import client_for

    cfg, model, test = setup
    path = workdir / "c.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump()))
    plain = experiment.evaluate_model

    def interrupted(*a, **k):
        return plain(*a, **{**k, "on_block": sigterm_after(2)})

    monkeypatch.setattr(experiment, "evaluate_model", interrupted)
    assert main(["evaluate", str(path), "--out", "rec.json"]) == 130
    lines = capsys.readouterr().err.strip().splitlines()  # progress lines, the signal's notice, then the error
    assert lines[-1].startswith("interrupted: SIGTERM received") and "--resume" in lines[-1]
    assert any("SIGTERM received: evaluation will stop" in line for line in lines[:-1])  # said at once
    assert not any("Traceback" in line for line in lines)
    assert (workdir / "rec.json.state.json").is_file() and not (workdir / "rec.json").exists()
    client = client_for()
    runs = client.search_runs([client.get_experiment_by_name(cfg.experiment).experiment_id])
    assert [r.info.status for r in runs] == ["KILLED"]
    assert "SIGTERM" in runs[0].data.tags["rftbench.error"]
    monkeypatch.setattr(experiment, "evaluate_model", plain)
    assert main(["evaluate", str(path), "--out", "rec.json", "--resume", "--no-log"]) == 0
    whole = evaluate_model(model, test, cfg, **KW)
    assert _numbers(EvaluationRecord.load("rec.json")) == _numbers(whole)
    assert not (workdir / "rec.json.state.json").exists()
    assert main(["evaluate", str(path), "--out", "rec.json", "--resume", "--no-log"]) == 2
    assert "no saved evaluation state" in capsys.readouterr().err
