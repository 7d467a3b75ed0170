"""The phenomenon grid specs expand as stated, run end to end, and the figure/table summarise runs."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from rftbench.cli import main
from rftbench.data.digits import write_imagefolder
from rftbench.results.phenomenon import markdown_table, runs_frame, summarise
from rftbench.plots import plot_phenomenon
from rftbench.experiments.sweep import expand_grid, load_grid_spec

ROOT = Path(__file__).resolve().parents[2]
GRIDS = ROOT / "benchmarks" / "grids"
SCHEDULES = {"none", "constant", "linear", "epsilon_scheduling"}


@pytest.mark.parametrize("spec, dataset", [("digits_phenomenon.yaml", "digits"),
                                           ("digits_phenomenon_imagefolder.yaml", "imagefolder")])
def test_phenomenon_grid_is_36_runs_over_the_stated_axes(spec, dataset):
    runs = expand_grid(load_grid_spec(GRIDS / spec), spec)
    assert len(runs) == 36 == len({r.name for r in runs})
    keys = {(r.config.schedule.name, r.config.threat.eps, r.config.seed) for r in runs}
    assert keys == {(s, e, seed) for s in SCHEDULES for e in (0.1, 0.2, 0.3) for seed in (0, 1, 2)}
    for r in runs:
        c = r.config
        assert r.labels == {"schedule": c.schedule.name, "eps": f"{c.threat.eps:g}", "seed": str(c.seed)}
        assert r.name == f"{c.schedule.name}-eps{c.threat.eps:g}-seed{c.seed}"
        assert c.data.name == dataset and c.model.name == "small_cnn" and c.model.pretrained
        assert c.attack.name == "pgd" and c.attack.steps == 7 and c.train.epochs == 20
        assert c.train.objective.name == "pgd_at" and c.threat.norm == "Linf"
        assert c.eval.sweep_attack == "pgd" and len(c.eps_grid()) == 5 and c.eps_grid()[-1] == c.threat.eps
        assert c.eval.autoattack.enabled and c.eval.autoattack.version == "standard"
        assert 50 <= c.eval.autoattack.n_samples <= 100
    es = {r.config.schedule.params.get("start") for r in runs if r.config.schedule.name == "epsilon_scheduling"}
    assert es == {0.24}
    assert {r.config.experiment for r in runs} == {f"rftbench-{spec[:-5].replace('_', '-')}"}


TINY = ["--set", "train.epochs=1", "--set", "attack.steps=2", "--set", "eval.sweep_steps=2",
        "--set", "eval.n_samples=40", "--set", "eval.autoattack.n_samples=10", "--set", "eval.checks.probe_samples=0",
        "--set", "data.batch_size=64"]


def _figure_script():
    spec = importlib.util.spec_from_file_location("phenomenon_figure", ROOT / "benchmarks" / "phenomenon_figure.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_two_runs_of_the_grid_end_to_end_then_figure_and_table(workdir, capsys):
    from rftbench.tracking.store import client_for

    only = ["--only", "none-eps0.2-seed0", "--only", "epsilon_scheduling-eps0.2-seed1"]
    assert main(["sweep", str(GRIDS / "digits_phenomenon.yaml"), *only, *TINY, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["summary"]["finished"] == 2 and out["summary"]["failed"] == 0
    results = [{**r, **r["summary"]} for r in out["runs"]]
    assert [r["name"] for r in results] == ["none-eps0.2-seed0", "epsilon_scheduling-eps0.2-seed1"]
    client = client_for()
    for r in results:
        run = client.get_run(r["run_id"])
        assert run.info.status == "FINISHED" and run.data.params["data.augment_preset"] == "none"
        assert run.data.tags["rftbench.augment"].startswith("identity")
        info = json.load(open(client.download_artifacts(r["run_id"], "splits.json", str(workdir / r["name"]))))
        assert info["augment"]["preset"] == "none" and info["augment"]["dataset_default"] == "none"
    df = runs_frame("rftbench-digits-phenomenon")
    assert sorted(df["schedule"]) == ["epsilon_scheduling", "none"] and set(df["eps"]) == {0.2}
    assert df.set_index("run_id").loc[results[0]["run_id"], "acc_clean"] == pytest.approx(results[0]["acc_clean"])
    assert df["acc_autoattack"].between(0, 1).all()
    out = workdir / "docs" / "phen.png"
    assert _figure_script().main(["--experiment", "rftbench-digits-phenomenon", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| none | 0.2 | 1 |" in text and "| epsilon_scheduling | 0.2 | 1 |" in text and out.is_file()
    assert text.index("| none |") < text.index("| epsilon_scheduling |")  # the schedules' order, not sorted
    assert _figure_script().main(["--experiment", "no-such-experiment", "--out", str(out)]) == 2
    assert "no finished, evaluated runs" in capsys.readouterr().err


def test_imagefolder_variant_runs_on_a_written_tree(workdir, capsys):
    counts = write_imagefolder(workdir / "tree")
    from sklearn.datasets import load_digits

    target = load_digits().target
    assert counts == {str(k): int((target == k).sum()) for k in range(5, 10)}
    assert len(list((workdir / "tree" / "7").glob("*.png"))) == counts["7"]
    assert main(["sweep", str(GRIDS / "digits_phenomenon_imagefolder.yaml"), "--only", "constant-eps0.1-seed0",
                 *TINY, "--set", f"data.root={workdir / 'tree'}", "--set", "eval.autoattack.enabled=false",
                 "--json"]) == 0
    (r,) = json.loads(capsys.readouterr().out)["runs"]
    r = r["summary"]
    assert 0 <= r["acc_clean"] <= 1 and 0 <= r["expected_robustness"] <= r["acc_clean"] + 1e-9


def _synthetic() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for k, schedule in enumerate(["none", "constant", "linear", "epsilon_scheduling"]):
        for eps in (0.1, 0.2, 0.3):
            for seed in range(3):
                clean = 0.95 - 0.2 * k * eps + rng.normal(0, 0.01)
                rows.append({"run_id": f"{schedule}{eps}{seed}", "schedule": schedule, "eps": eps, "seed": seed,
                             "acc_clean": clean, "acc_sweep": clean / 3, "acc_autoattack": clean / 4,
                             "expected_robustness": clean / 2})
    return pd.DataFrame(rows).sample(frac=1.0, random_state=1)  # order of rows must not matter


def test_summary_table_and_figure_on_a_synthetic_frame(tmp_path):
    df = _synthetic()
    order = ["none", "constant", "linear", "epsilon_scheduling"]
    s = summarise(df, order)
    assert [k for k in s.index] == [(o, e) for o in order for e in (0.1, 0.2, 0.3)]
    sel = df[(df.schedule == "linear") & (df.eps == 0.2)]["acc_clean"].to_numpy()
    assert s.loc[("linear", 0.2), ("acc_clean", "mean")] == pytest.approx(sel.mean())
    assert s.loc[("linear", 0.2), ("acc_clean", "std")] == pytest.approx(sel.std(ddof=1))
    table = markdown_table(df, order).splitlines()
    assert table[0] == "| schedule | target eps | seeds | clean | PGD at target | AutoAttack | ER |"
    assert len(table) == 2 + 12
    row = next(line for line in table if line.startswith("| linear | 0.2 |"))
    assert f"{sel.mean():.3f} ± {sel.std(ddof=1):.3f}" in row and f"{sel.mean() / 2:.3f}" in row
    out = plot_phenomenon(df, tmp_path / "fig" / "p.png", order=order)
    img = matplotlib.image.imread(out)
    assert img.shape[0] > 300 and img.shape[1] > 800 and img[..., :3].std() > 0.05
