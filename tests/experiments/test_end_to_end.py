"""One end-to-end run at toy size: MLflow must hold what the leaderboard shows."""
import json

import pytest

from conftest import tiny_config
from rftbench.experiments.experiment import run_experiment
from rftbench.results.leaderboard import build_leaderboard
from rftbench.tracking.store import client_for


def test_run_logs_params_metrics_artifacts_and_leaderboard_reads_them(workdir):
    cfg = tiny_config(eval__autoattack__enabled=True)
    res = run_experiment(cfg)
    client = client_for()
    run = client.get_run(res.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["schedule.name"] == "linear"
    assert run.data.params["threat.eps"] == "0.2" and run.data.params["threat.norm"] == "Linf"
    m = run.data.metrics
    rec = res.record
    assert m["eval/expected_robustness"] == pytest.approx(rec["expected_robustness"]["value"])
    assert m["eval/acc_autoattack"] == pytest.approx(rec["autoattack"]["accuracy"])
    assert [h.step for h in client.get_metric_history(res.run_id, "train/loss")] == [0, 1]
    arts = {a.path for a in client.list_artifacts(res.run_id)}
    assert {"config.yaml", "model", "evaluation", "splits.json"} <= arts
    ev = {a.path for a in client.list_artifacts(res.run_id, "evaluation")}
    assert {"evaluation/evaluation.json", "evaluation/robustness_curve.csv", "evaluation/robustness_curve.png"} <= ev
    local = client.download_artifacts(res.run_id, "evaluation/evaluation.json", str(workdir / "dl"))
    assert json.load(open(local))["sweep"]["accuracy"] == rec["sweep"]["accuracy"]
    # AutoAttack (a stronger attack) never leaves more samples robust than the sweep's PGD at
    # the same eps on the same samples
    assert rec["autoattack"]["n_target_classes"] == 4
    same = rec["autoattack"]["sweep_same_samples"]
    assert same["eps"] == pytest.approx(0.2)
    assert rec["autoattack"]["accuracy"] <= same["accuracy"]
    t = build_leaderboard("tests", n_resamples=100).table
    assert len(t) == 1 and t["run_ids"][0] == res.run_id
    assert t["clean_mean"][0] == pytest.approx(rec["clean_accuracy"], abs=1e-4)
    assert t["aa_mean"][0] == pytest.approx(rec["autoattack"]["accuracy"], abs=1e-4)


def test_failed_run_is_marked_failed(workdir, monkeypatch):
    import rftbench.experiments.experiment as ex

    def boom(*a, **k):
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(ex, "evaluate_model", boom)
    with pytest.raises(RuntimeError):
        run_experiment(tiny_config(train__epochs=1))
    client = client_for()
    runs = client.search_runs([client.get_experiment_by_name("tests").experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]
    assert "simulated crash" in runs[0].data.tags["rftbench.error"]
