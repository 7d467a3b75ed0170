"""The leaderboard from real MLflow runs (2 schedules x 2 seeds, tiny trainings), checked against
numpy on the per-sample arrays of the evaluation records."""
import io
import json
import tempfile
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from conftest import tiny_config
from rftbench.errors import LeaderboardError
from rftbench.experiments.experiment import log_evaluation_record, run_experiment
from rftbench.results.leaderboard import build_leaderboard
from rftbench.results.export import render_to_text, to_format
from rftbench.evaluation.metrics import expected_robustness
from rftbench.tracking.store import client_for

SCHEDULES = {"constant": {}, "linear": {"warmup": 0.5}}


@pytest.fixture(scope="module")
def runs(store):
    out = {}
    for name, params in SCHEDULES.items():
        for seed in (0, 1):
            cfg = tiny_config(name=f"{name}-{seed}", seed=seed, train__epochs=1, schedule__name=name,
                              schedule__params=params, train__log_mlflow_model=(seed == 0 and name == "linear"))
            out[(name, seed)] = run_experiment(cfg)
    return store, out


def _numpy_per_sample(records, metric):
    arrs = []
    for rec in records:
        s = rec.samples()
        if metric == "clean":
            arrs.append(s.sweep_flags[:, 0].astype(float))
        elif metric == "pgd":
            arrs.append(s.sweep_flags[:, -1].astype(float))
        else:
            g, dist = rec["expected_robustness"]["grid"], rec["expected_robustness"]["distribution"]
            arrs.append(np.array([expected_robustness(g, f.astype(float), dist) for f in s.sweep_flags]))
    return np.mean(arrs, axis=0)


def _np_bootstrap(x, b=4000, seed=1, y=None):
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), size=(b, len(x)))
    stat = x[idx].mean(1) - (0 if y is None else y[idx].mean(1))
    return np.percentile(stat, [2.5, 97.5])


def test_aggregates_and_sample_and_seed_cis_match_numpy(runs):
    _, out = runs
    lb = build_leaderboard("tests", n_resamples=4000)
    t = lb.table
    assert len(t) == 2 and set(t["n_seeds"]) == {2}
    assert t["rank"].tolist() == [1, 2] and t["er_mean"].is_monotonic_decreasing
    for name in SCHEDULES:
        row = t[t["schedule"].str.startswith(name)].iloc[0]
        recs = [out[(name, s)].record for s in (0, 1)]
        for m, key in (("clean", "clean_accuracy"), ("er", None)):
            vals = np.array([r["clean_accuracy"] if key else r["expected_robustness"]["value"] for r in recs])
            assert row[f"{m}_mean"] == pytest.approx(vals.mean(), abs=1e-4)
            assert row[f"{m}_std"] == pytest.approx(vals.std(ddof=1), abs=1e-4)
            if vals.std() > 0:
                half = 12.706204736 * vals.std(ddof=1) / np.sqrt(2)  # t(0.975, df=1)
                assert row[f"{m}_seed_ci_lo"] == pytest.approx(vals.mean() - half, abs=1e-4)
                assert row[f"{m}_seed_ci_hi"] == pytest.approx(vals.mean() + half, abs=1e-4)
            x = _numpy_per_sample(recs, m)
            assert x.mean() == pytest.approx(vals.mean(), abs=1e-9)  # the seed mean is the mean of per-sample means
            lo, hi = _np_bootstrap(x)
            assert row[f"{m}_ci_lo"] == pytest.approx(lo, abs=0.03) and row[f"{m}_ci_hi"] == pytest.approx(hi, abs=0.03)
        # compute: attack passes = attacked steps x attack steps x batch size
        tr = [r["train"] for r in recs]
        assert row["attack_passes"] == pytest.approx(np.mean([x["attack_steps"] * 2 * 64 for x in tr]), abs=1e-3)
        assert row["train_wall_s"] == pytest.approx(np.mean([x["wall_time_s"] for x in tr]), rel=1e-3)


def test_paired_difference_against_baseline_matches_numpy(runs):
    _, out = runs
    lb = build_leaderboard("tests", baseline="constant", n_resamples=4000)
    t = lb.table.set_index(lb.table["schedule"].str.split("(").str[0])
    assert t.loc["constant", "paired_note"] == "baseline"
    row = t.loc["linear"]
    for m in ("clean", "er"):
        xs = _numpy_per_sample([out[("linear", s)].record for s in (0, 1)], m)
        xb = _numpy_per_sample([out[("constant", s)].record for s in (0, 1)], m)
        assert row[f"d_{m}"] == pytest.approx(xs.mean() - xb.mean(), abs=1e-4)
        if np.any(xs != xb):
            lo, hi = _np_bootstrap(xs, y=xb)
            assert row[f"d_{m}_ci_lo"] == pytest.approx(lo, abs=0.03)
            assert row[f"d_{m}_ci_hi"] == pytest.approx(hi, abs=0.03)
            assert 0.0 < row[f"d_{m}_p"] <= 1.0
    with pytest.raises(LeaderboardError, match="none of the schedules"):
        build_leaderboard("tests", baseline="cosine")


def test_exports_carry_identical_numbers(runs):
    lb = build_leaderboard("tests", baseline="constant", n_resamples=500)
    ref = pd.DataFrame(json.loads(to_format(lb, "json")))
    csv = pd.read_csv(io.StringIO(to_format(lb, "csv")))
    cols = [c for c in ref.columns if c.endswith(("_mean", "_std", "_ci_lo", "_ci_hi")) or c.startswith("d_")]
    assert cols and len(csv) == len(ref)
    pd.testing.assert_frame_equal(csv[cols].astype(float), ref[cols].astype(float), check_exact=True)
    for fmt in ("markdown", "html", "latex"):
        text = to_format(lb, fmt)
        for v in ref["er_mean"].tolist() + ref["clean_ci_lo"].tolist() + ref["d_er"].dropna().tolist():
            assert re.search(rf"(?<![\d.]){re.escape(format(v, '.10g'))}(?![\d])", text), (fmt, v)


def test_latex_export_escapes_and_compiles(runs, tmp_path):
    """Column names (``er_mean``) and run ids are text, not LaTeX syntax: every ``_``, ``%``, ``&``
    and ``#`` is escaped, and the table compiles where pdflatex is installed."""
    text = to_format(build_leaderboard("tests", n_resamples=100), "latex")
    body = text.replace(" & ", " ")  # the column separators are LaTeX's own
    assert "er\\_mean" in text and body != text and not re.search(r"(?<!\\)[_%&#]", body), text[:500]
    pdflatex = shutil.which("pdflatex")
    if pdflatex is None:
        pytest.skip("pdflatex is not installed (Debian: texlive-latex-base); escaping checked above")
    doc = tmp_path / "lb.tex"
    doc.write_text("\\documentclass{article}\\usepackage{booktabs}\\usepackage[margin=0.2in,landscape]{geometry}"
                   "\\begin{document}\\tiny\n" + text + "\n\\end{document}\n")
    res = subprocess.run([pdflatex, "-interaction=nonstopmode", "-halt-on-error", doc.name], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout[-2000:]


def test_evaluate_of_a_trained_model_and_rerun_do_not_add_rows(runs):
    d, out = runs
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(d)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{d / 'mlflow.db'}")
        res = out[("linear", 0)]
        client = client_for()
        assert client.get_run(res.run_id).data.tags["rftbench.weights_sha256"] == res.record["model"]["weights_sha256"]
        eval_id = log_evaluation_record(res.record, experiment="tests", run_name="eval:again")
        lb = build_leaderboard("tests", n_resamples=200)
        assert len(lb.table) == 2
        row = lb.table[lb.table["schedule"].str.startswith("linear")].iloc[0]
        assert row["n_evals"] == 3 and eval_id in row["run_ids"] and res.run_id not in row["run_ids"]
        assert row["train_wall_s"] == pytest.approx(np.mean([out[("linear", s)].record["train"]["wall_time_s"]
                                                             for s in (0, 1)]), rel=1e-3)
        client.delete_run(eval_id)


def test_flagged_rows_rank_after_unflagged(runs):
    d, _ = runs
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{d / 'mlflow.db'}")
        lb = build_leaderboard("tests", n_resamples=200)
        best = lb.table.iloc[0]
        client = client_for()
        for rid in best["run_ids"].split(","):
            client.set_tag(rid, "rftbench.flagged", "True")
        try:
            again = build_leaderboard("tests", n_resamples=200).table
            assert again.iloc[-1]["schedule"] == best["schedule"] and bool(again.iloc[-1]["flagged"])
            assert again.iloc[0]["er_mean"] <= best["er_mean"]
        finally:
            for rid in best["run_ids"].split(","):
                client.set_tag(rid, "rftbench.flagged", "False")


def test_bad_input_gives_clear_errors(runs, workdir):
    with pytest.raises(LeaderboardError, match="no MLflow experiment named 'nope'"):
        build_leaderboard("nope")
    d, _ = runs
    import os
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{d / 'mlflow.db'}"
    with pytest.raises(LeaderboardError, match="unknown --group-by"):
        build_leaderboard("tests", group_by=["model", "colour"])
    with pytest.raises(LeaderboardError, match="no evaluated run matches"):
        build_leaderboard("tests", where=["schedule=cosine*"])
    lb = build_leaderboard("tests", group_by=["model", "seed"], n_resamples=100)
    assert set(lb.table["n_seeds"]) == {1} and lb.table["er_seed_ci_lo"].isna().all()
    with pytest.raises(LeaderboardError, match="at least 2 seeds"):
        build_leaderboard("tests", group_by=["model", "seed"], seed_ci=True)
    assert len(build_leaderboard("tests", where=["schedule=linear*"], n_resamples=100).table) == 1


def test_cli_piped_output_is_not_truncated_and_mlflow_has_what_users_expect(runs, capsys):
    import os

    from rftbench.cli import main

    d, out = runs
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{d / 'mlflow.db'}"
    assert main(["leaderboard", "--experiment", "tests", "--n-resamples", "100"]) == 0
    text = capsys.readouterr().out
    assert "linear(warmup=0.5)" in text and max(len(l) for l in text.splitlines()) > 200
    assert main(["leaderboard", "--experiment", "tests", "--format", "json", "--n-resamples", "100"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2
    run = client_for().get_run(out[("linear", 0)].run_id)
    tags = run.data.tags
    assert tags["mlflow.user"] and tags["mlflow.source.name"] and len(tags.get("mlflow.source.git.commit", "x" * 40)) == 40
    hist = client_for().get_metric_history(run.info.run_id, "eval/robustness_curve")
    assert [h.value for h in sorted(hist, key=lambda h: h.step)] == out[("linear", 0)].record["sweep"]["accuracy"]
    assert not any(k.startswith("eval/acc_sweep_eps_") for k in run.data.metrics)
    assert {i.dataset.name for i in run.inputs.dataset_inputs} == {"digits-train", "digits-val", "digits-test"}
    import mlflow.pytorch
    import torch
    # the logged model, by the URI users are told (runs:/RUN_ID/mlflow_model), through this test's
    # store (mlflow's global tracking URI may be another test's)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(client_for().tracking_uri)
    try:
        model = mlflow.pytorch.load_model(f"runs:/{run.info.run_id}/mlflow_model", dst_path=tempfile.mkdtemp())
    finally:
        mlflow.set_tracking_uri(previous)
    assert model(torch.zeros(1, 1, 16, 16)).shape[-1] == 5


def test_rerun_of_a_config_replaces_its_row_and_val_runs_need_include_val(runs):
    d, out = runs
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(d)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{d / 'mlflow.db'}")
        again = run_experiment(tiny_config(name="constant-0", seed=0, train__epochs=1, schedule__name="constant",
                                           schedule__params={}, train__log_mlflow_model=False))
        val = run_experiment(tiny_config(name="val-0", seed=0, train__epochs=1, schedule__name="linear",
                                         schedule__params={"warmup": 0.25}, eval__split="val",
                                         train__log_mlflow_model=False))
        lb = build_leaderboard("tests", n_resamples=100)
        assert len(lb.table) == 2
        row = lb.table[lb.table["schedule"] == "constant"].iloc[0]
        assert again.run_id in row["run_ids"] and out[("constant", 0)].run_id not in row["run_ids"]
        assert row["n_evals"] == 3 and row["n_seeds"] == 2
        m = client_for().get_run(val.run_id).data.metrics
        assert not any(k.startswith("eval/") for k in m)
        assert m["val/expected_robustness"] == pytest.approx(val.record["expected_robustness"]["value"])
        full = build_leaderboard("tests", include_val=True, n_resamples=100).table
        assert len(full) == 3 and set(full["split"]) == {"test", "val"}
        assert full[full["split"] == "val"]["er_mean"].iloc[0] == pytest.approx(
            val.record["expected_robustness"]["value"], abs=1e-4)


def _copy_run(client, run, exp_id, metrics=None, **tag_changes):
    from mlflow.entities import Metric, Param, RunTag

    new = client.create_run(exp_id, run_name=run.info.run_name)
    tags = {**{k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.") and k != "rftbench.flagged"},
            **tag_changes}
    m = {**run.data.metrics, **(metrics or {})}
    client.log_batch(new.info.run_id, metrics=[Metric(k, v, 0, 0) for k, v in m.items()],
                     params=[Param(k, v) for k, v in run.data.params.items()],
                     tags=[RunTag(k, v) for k, v in tags.items()])
    client.set_terminated(new.info.run_id, "FINISHED")


def test_paired_comparison_across_subsets_says_why_and_records_are_required(runs):
    d, out = runs
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{d / 'mlflow.db'}")
        client = client_for()
        exp = client.create_experiment("other-subsets")
        for (name, seed), res in out.items():
            changes = {"rftbench.subset_sha256": "f" * 64} if name == "linear" else {}
            _copy_run(client, client.get_run(res.run_id), exp, **changes)
        lb = build_leaderboard("other-subsets", baseline="constant", n_resamples=100)
        row = lb.table[lb.table["schedule"].str.startswith("linear")].iloc[0]
        assert "another test subset" in row["paired_note"] and np.isnan(row["d_er"])
        assert lb.table["subset"].nunique() == 2  # never one group across subsets
        empty = client.create_experiment("no-records")
        r = client.create_run(empty)
        client.set_terminated(r.info.run_id, "FINISHED")
        with pytest.raises(LeaderboardError, match="no finished run with an evaluation record"):
            build_leaderboard("no-records")


def test_a_record_with_warnings_and_no_flagged_tag_counts_as_flagged(runs):
    d, out = runs
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{d / 'mlflow.db'}")
        client = client_for()
        exp = client.create_experiment("warned")
        best = build_leaderboard("tests", n_resamples=100).table.iloc[0]["schedule"].split("(")[0]
        for (name, seed), res in out.items():
            _copy_run(client, client.get_run(res.run_id), exp,
                      metrics={"eval/n_warnings": 1.0} if name == best else None)
        t = build_leaderboard("warned", n_resamples=100).table
        assert t.iloc[-1]["schedule"].startswith(best) and bool(t.iloc[-1]["flagged"])
        assert not bool(t.iloc[0]["flagged"])
