"""A leaderboard row is one setting: runs that differ in anything but the seed are separate rows
with the differing keys named, AutoAttack over other sample counts is never averaged, and
``--where`` on training keys finds evaluations through their training run.

The runs are written straight into the module's SQLite MLflow store, shaped as
:mod:`rftbench.experiments.experiment` logs them: the params of a real resolved config (``cfg.flat()``), the
``eval/*`` metrics, the leaderboard tags and the per-sample summary tag, whose flags the metrics
are computed from (so the bootstrap and the means agree)."""
import io
import json

import numpy as np
import pandas as pd
import pytest
from mlflow.entities import Metric, Param, RunTag

from conftest import tiny_config
from rftbench.results.leaderboard import build_leaderboard
from rftbench.results.export import render_to_text, to_format
from rftbench.evaluation.sample_summary import SampleSummary, encode, er_weights
from rftbench.tracking.store import client_for, get_or_create_experiment

GRID = [0.0, 0.1, 0.2]
SUBSET = "ab" * 32


def _log(client, experiment, *, params=None, metrics=None, tags=None):
    exp = get_or_create_experiment(client, experiment)
    run = client.create_run(exp, run_name=(params or {}).get("name", "eval"))
    client.log_batch(run.info.run_id, metrics=[Metric(k, float(v), 0, 0) for k, v in (metrics or {}).items()],
                     params=[Param(k, str(v)) for k, v in (params or {}).items()],
                     tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()])
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


def _evaluation(rng, n_aa, n=128, p=0.7):
    """Metrics and tags of an evaluation on SUBSET (n samples, AutoAttack on the first n_aa)."""
    sweep = np.cumprod(rng.random((n, len(GRID))) < np.array([p, 0.8, 0.7]), axis=1) > 0
    aa = sweep[:n_aa, -1] & (rng.random(n_aa) < 0.8)
    w = er_weights(GRID, "uniform")
    metrics = {"eval/acc_clean": sweep[:, 0].mean(), "eval/acc_sweep": sweep[:, -1].mean(),
               "eval/acc_autoattack": aa.mean(), "eval/expected_robustness": float((sweep @ w).mean()),
               "eval/n_warnings": 0, "eval/n_samples": n, "train/wall_time_s": 3.0,
               "train/attack_steps": 10, "train/attack_fraction": 0.5}
    tags = {"rftbench.split": "test", "rftbench.norm": "Linf", "rftbench.eps": 0.2, "rftbench.certified": "True",
            "rftbench.er_name": "ER[uniform(0,51/255),3pts,PGD-3]", "rftbench.subset_sha256": SUBSET,
            "rftbench.n_aa": n_aa, "rftbench.flagged": "False", "rftbench.per_sample": encode(SampleSummary(sweep, aa, w))}
    return metrics, tags


def _training_run(client, experiment, rng, *, n_aa=16, evaluated=True, weights=None, **cfg):
    params = tiny_config(experiment=experiment, schedule__name="linear", schedule__params={"warmup": 0.5},
                         **cfg).flat()
    metrics, tags = _evaluation(rng, n_aa) if evaluated else ({"train/wall_time_s": 3.0}, {})
    tags = {**tags, "rftbench.kind": "experiment", "rftbench.model": "small_cnn", "rftbench.dataset": "digits",
            "rftbench.schedule": "linear", "rftbench.weights_sha256": weights or rng.bytes(32).hex()}
    return _log(client, experiment, params=params, metrics=metrics, tags=tags), metrics


@pytest.fixture(scope="module")
def client(store):
    return client_for()


def test_two_demos_of_one_schedule_are_two_rows_naming_what_differs(client):
    rng = np.random.default_rng(0)
    long_id, long_m = _training_run(client, "two-demos", rng, name="demo-linear", train__epochs=20, n_aa=100)
    short_id, short_m = _training_run(client, "two-demos", rng, name="demo-linear", train__epochs=2, n_aa=10)
    lb = build_leaderboard("two-demos", n_resamples=100)
    t = lb.table.set_index("run_ids")
    assert len(t) == 2 and set(t["n_seeds"]) == {1} and t["schedule"].nunique() == 1
    assert t.loc[long_id, "differs"] == "train.epochs 20 vs 2; n_aa 100 vs 10"
    assert t.loc[short_id, "differs"] == "train.epochs 2 vs 20; n_aa 10 vs 100"
    for rid, m in ((long_id, long_m), (short_id, short_m)):  # each row its own run's numbers, none averaged
        assert t.loc[rid, "clean_mean"] == pytest.approx(m["eval/acc_clean"], abs=5e-5)  # rounded to 4 decimals
        assert t.loc[rid, "aa_mean"] == pytest.approx(m["eval/acc_autoattack"], abs=5e-5)
    text = render_to_text(lb)
    assert "train.epochs 20 vs 2; n_aa 100 vs 10" in text and "n=100" in text and "n=10" in text
    csv = pd.read_csv(io.StringIO(to_format(lb, "csv")))
    assert sorted(csv["differs"]) == sorted(t["differs"])
    assert sorted(r["differs"] for r in json.loads(to_format(lb, "json"))) == sorted(t["differs"])
    assert "train.epochs 2 vs 20" in to_format(lb, "markdown")
    assert r"train.epochs 20 vs 2; n\_aa 100 vs 10" in to_format(lb, "latex")


def test_seeds_of_one_setting_are_one_row_with_pandas_means(client):
    rng = np.random.default_rng(1)
    per_run = []
    for seed in (0, 1, 2):  # logging-only keys differ between the seeds: still one setting
        rid, m = _training_run(client, "three-seeds", rng, name=f"s{seed}", seed=seed,
                               train__log_mlflow_model=seed == 0, train__log_every=5 + seed)
        per_run.append({"run_id": rid, **m})
    lb = build_leaderboard("three-seeds", n_resamples=100)
    assert len(lb.table) == 1
    row, ref = lb.table.iloc[0], pd.DataFrame(per_run)
    assert row["n_seeds"] == 3 and row["seeds"] == "0,1,2" and row["differs"] == ""
    assert set(row["run_ids"].split(",")) == set(ref["run_id"])
    for col, metric in (("clean", "acc_clean"), ("pgd", "acc_sweep"), ("aa", "acc_autoattack"),
                        ("er", "expected_robustness")):
        assert row[f"{col}_mean"] == pytest.approx(ref[f"eval/{metric}"].mean(), abs=5e-5)  # rounded to 4 decimals
        assert row[f"{col}_std"] == pytest.approx(ref[f"eval/{metric}"].std(), abs=5e-5)


def test_autoattack_on_other_sample_counts_is_never_averaged(client):
    rng = np.random.default_rng(2)
    a, ma = _training_run(client, "aa-counts", rng, name="a", seed=0, n_aa=100)
    b, mb = _training_run(client, "aa-counts", rng, name="b", seed=1, n_aa=10)
    t = build_leaderboard("aa-counts", n_resamples=100).table.set_index("run_ids")
    assert len(t) == 2 and set(t["n_seeds"]) == {1}
    assert t.loc[a, "n_aa"] == 100 and t.loc[b, "n_aa"] == 10
    assert t.loc[a, "aa_mean"] == pytest.approx(ma["eval/acc_autoattack"], abs=5e-5)
    assert t.loc[b, "aa_mean"] == pytest.approx(mb["eval/acc_autoattack"], abs=5e-5)
    assert t.loc[a, "differs"] == "n_aa 100 vs 10" and t.loc[b, "differs"] == "n_aa 10 vs 100"


def test_where_on_training_keys_finds_merged_and_re_evaluated_runs(client):
    rng = np.random.default_rng(3)
    w10, w2 = rng.bytes(32).hex(), rng.bytes(32).hex()
    train10, _ = _training_run(client, "re-evaluated", rng, name="ten", train__epochs=10, evaluated=False, weights=w10)
    _training_run(client, "re-evaluated", rng, name="two", train__epochs=2, evaluated=False, weights=w2)
    metrics, tags = _evaluation(rng, 16)
    # a merged shard evaluation (rftbench evaluate merge) carries no params at all
    merged = _log(client, "re-evaluated", metrics=metrics,
                  tags={**tags, "rftbench.kind": "evaluation", "rftbench.weights_sha256": w10})
    # a re-evaluation logs its evaluate config's params: train.epochs is that config's (2), not the training's
    eval_cfg = tiny_config(experiment="re-evaluated", model__name="file:ten/model.safetensors", train__epochs=2,
                           eval__n_samples=64).flat()
    metrics, tags = _evaluation(rng, 16)
    re_eval = _log(client, "re-evaluated", params=eval_cfg, metrics=metrics,
                   tags={**tags, "rftbench.kind": "evaluation", "rftbench.weights_sha256": w2})
    ten = build_leaderboard("re-evaluated", where=["train.epochs=10"], n_resamples=100).table
    assert len(ten) == 1 and ten.iloc[0]["run_ids"] == merged and ten.iloc[0]["seeds"] == "0"
    two = build_leaderboard("re-evaluated", where=["train.epochs=2"], n_resamples=100).table
    assert two["run_ids"].tolist() == [re_eval]
    lb = build_leaderboard("re-evaluated", n_resamples=100)
    assert len(lb.table) == 2 and set(lb.table["differs"]) == {"train.epochs 10 vs 2", "train.epochs 2 vs 10"}
    assert lb.runs.set_index("run_id").loc[merged, "train_run_id"] == train10
