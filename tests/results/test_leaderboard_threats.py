"""The leaderboard's per-threat view from real MLflow runs evaluated with eval.threats: numbers
come from the records, and different threat definitions are never ranked or shown side by side."""
import numpy as np
import pytest

from conftest import tiny_config
from rftbench.errors import LeaderboardError
from rftbench.experiments.experiment import run_experiment
from rftbench.results.leaderboard import build_leaderboard
from rftbench.results.modelcard import threats_card

CORR = {"corruptions": ["contrast"], "severities": [1]}


@pytest.fixture(scope="module")
def runs(store):
    out = {}
    for name, seed, points in (("constant", 0, 3), ("linear", 0, 3), ("linear", 1, 2)):
        cfg = tiny_config(name=f"{name}-{seed}", seed=seed, train__epochs=1, schedule__name=name,
                          schedule__params={"warmup": 0.5} if name == "linear" else {},
                          train__log_mlflow_model=False, eval__n_samples=32,
                          eval__threats=[{"norm": "L2", "eps": 1.0, "num_points": points}, CORR])
        out[(name, seed)] = run_experiment(cfg).record
    return out


def _l2_at_target(rec):
    v = rec["threats"]["norms"]["L2:1"]
    return v["sweep"]["accuracy"][-1], v["expected_robustness"]["value"]


def test_threat_view_ranks_the_threat_s_numbers_within_one_definition(runs):
    lb = build_leaderboard("tests", threat="L2", n_resamples=200)
    t = lb.table
    # 2 definitions of L2:1 (3 and 2 grid points): 2 groups, never one ranking
    assert set(t["er_name"].str.split("#").str[0]) == {"L2:1"} and t["er_name"].nunique() == 2
    assert sorted(t.groupby("er_name").size().tolist()) == [1, 2]
    for (name, seed), rec in runs.items():
        pgd, er = _l2_at_target(rec)
        rows = t[t["schedule"].str.startswith(name) & (t["seeds"].astype(str) == str(seed))]
        assert len(rows) == 1
        assert rows["pgd_mean"].iloc[0] == pytest.approx(pgd, abs=1e-4)  # the table rounds to 4 decimals
        assert rows["er_mean"].iloc[0] == pytest.approx(er, abs=1e-4)
    assert t["pgd_ci_lo"].isna().all()  # no bootstrap CI from the training threat's per-sample flags
    by_metric = build_leaderboard("tests", metric="er@L2:1", n_resamples=200).table
    assert by_metric["er_mean"].tolist() == t["er_mean"].tolist()


def test_default_view_has_a_column_group_per_comparable_threat(runs):
    t = build_leaderboard("tests", n_resamples=200).table
    # one group; its runs evaluated L2:1 under two definitions: no L2 columns side by side
    assert "pgd@L2:1" not in t.columns
    corr = {k: rec["threats"]["corruptions"]["mean_accuracy"] for k, rec in runs.items()}
    const = t[t["schedule"].str.startswith("constant")]["corruptions"].iloc[0]
    linear = t[t["schedule"].str.startswith("linear")]["corruptions"].iloc[0]
    assert const == pytest.approx(corr[("constant", 0)], abs=1e-4)
    assert linear == pytest.approx((corr[("linear", 0)] + corr[("linear", 1)]) / 2, abs=1e-4)
    # the training threat's own numbers, under its key
    assert t["pgd@Linf:0.2"].notna().all()


def test_unknown_threats_say_what_the_runs_evaluated(runs):
    with pytest.raises(LeaderboardError, match="no run evaluated 'L1'.*L2:1"):
        build_leaderboard("tests", threat="L1")


def test_model_card_has_a_field_per_threat_model(runs):
    rec = runs[("constant", 0)]
    card = threats_card(rec["threats"])
    assert card["L2:1"]["threat_model"] == "L2" and card["L2:1"]["autoattack_acc"] is None
    assert card["corruptions"]["corruptions_acc"] == f"{100 * rec['threats']['corruptions']['mean_accuracy']:.2f}"
    assert card["union"]["threats"] == ["Linf:0.2", "L2:1"]  # the training threat joins the union
