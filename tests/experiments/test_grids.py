"""Experiment grids: the paper-scale specs expand into valid configs; a toy grid runs end to end."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import dataset_fixtures as F
from rftbench.cli import main
from rftbench.config import load_config
from rftbench.errors import ConfigError
from rftbench.models.catalog import PAPER_BACKBONES
from rftbench.experiments.sweep import expand_grid, load_grid_spec, run_grid, select_runs, write_configs

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "grids"


@pytest.fixture(scope="module")
def paper_runs():
    return expand_grid(load_grid_spec(BENCH / "paper_grid.yaml"), "paper_grid.yaml")


def test_paper_grid_is_the_papers_grid(paper_runs):
    assert len(paper_runs) == 6 * 5 * 2 * 2 * 2 == len({r.name for r in paper_runs})
    cfgs = [r.config for r in paper_runs]
    assert {c.model.name for c in cfgs} == set(PAPER_BACKBONES.values())
    assert {c.data.name for c in cfgs} == {"caltech101", "stanford_dogs", "cub200", "stanford_cars", "fgvc_aircraft"}
    assert {round(c.threat.eps * 255, 9) for c in cfgs} == {4, 8}
    assert {c.attack.name for c in cfgs} == {"apgd", "pgd"}
    assert all(c.attack.steps == 7 and c.threat.norm == "Linf" for c in cfgs)
    assert all(c.train.epochs == 50 and c.model.regime.name == "full" and c.train.objective.name == "pgd_at"
               for c in cfgs)
    # expected robustness as the paper computes it: APGD-CE with 10 steps
    assert all(c.eval.sweep_attack == "apgd-ce" and c.eval.sweep_steps == 10 for c in cfgs)
    assert all(c.model.pretrained and c.data.download is False for c in cfgs)
    sched = {(c.schedule.name, tuple(sorted(c.schedule.params.items()))) for c in cfgs}
    assert sched == {("constant", ()), ("epsilon_scheduling", (("end", 0.74), ("start", 0.24)))}
    for c in cfgs:  # the expected-robustness grid: 0 .. target in steps of 1/255
        grid = c.eps_grid()
        assert grid[-1] == pytest.approx(c.threat.eps) and len(grid) == round(c.threat.eps * 255) + 1
        assert all(b - a == pytest.approx(1 / 255) for a, b in zip(grid, grid[1:]))


def test_earlier_benchmark_grid():
    runs = expand_grid(load_grid_spec(BENCH / "rft_benchmark_grid.yaml"), "rft_benchmark_grid.yaml")
    cfgs = [r.config for r in runs]
    assert len(runs) == 144
    regimes = {(c.model.regime.name, c.train.epochs) for c in cfgs}
    assert regimes == {("full", 5), ("full", 50), ("linear_probe", 50)}
    assert all(c.train.optimizer == "adamw" and c.accum_steps() * c.data.batch_size == 1024 for c in cfgs)
    assert all(c.model.head_lr_scale != 1.0 and c.model.head_weight_decay != c.train.weight_decay for c in cfgs)
    assert {c.data.name for c in cfgs} == {"caltech101", "fgvc_aircraft", "flowers102", "oxford_pet", "stanford_cars",
                                           "imagefolder"}
    assert {c.data.root for c in cfgs if c.data.name == "imagefolder"} == {"$RFTBENCH_DATA/UCMerced_LandUse/Images"}
    assert {c.data.augment for c in cfgs if c.data.name == "imagefolder"} == {"crop_flip"}  # aerial scenes flip
    assert {c.train.objective.name for c in cfgs} == {"pgd_at", "trades"}
    assert {c.train.objective.params.get("beta") for c in cfgs if c.train.objective.name == "trades"} == {6.0}
    for c in cfgs:  # PGD-10 with step 2/255 at Linf 4/255
        assert c.attack.name == "pgd" and c.attack.steps == 10
        assert c.threat.eps == pytest.approx(4 / 255)
        assert c.attack.step_ratio * c.threat.eps == pytest.approx(2 / 255)


def test_select_and_write_configs(paper_runs, tmp_path):
    chosen = select_runs(paper_runs, only=["vit-*-eps4-*-apgd"])
    assert len(chosen) == 5 * 2 and all(r.labels["backbone"] == "vit" for r in chosen)
    shards = [select_runs(chosen, shard=f"{i}/3") for i in range(3)]
    assert sorted(r.name for s in shards for r in s) == sorted(r.name for r in chosen)
    with pytest.raises(ConfigError, match=r"index must lie in 0..2"):
        select_runs(chosen, shard="3/3")
    paths = write_configs(chosen[:2], tmp_path)
    for p, r in zip(paths, chosen[:2]):
        assert load_config(p) == r.config


def test_bad_specs_fail_before_any_work(tmp_path, capsys):
    base = {"base": {"data": {"name": "digits"}}, "axes": {"model": {"a": {"model.name": "timm:resnet_18"}}}}
    spec = tmp_path / "bad.yaml"
    spec.write_text(yaml.safe_dump(base))
    assert main(["sweep", str(spec), "--list"]) == 2
    err = capsys.readouterr().err
    assert "timm has no model 'resnet_18'" in err and "Traceback" not in err
    base["axes"]["model"]["a"] = {"model.name": "small_cnn", "data.name": "cifar11"}
    with pytest.raises(Exception, match="Did you mean 'cifar10'"):
        expand_grid(base)
    base["axes"]["model"]["a"] = {"model.nmae": "small_cnn"}
    with pytest.raises(ConfigError, match="model.nmae: unknown key"):
        expand_grid(base)
    with pytest.raises(ConfigError, match="not an axis"):
        expand_grid({"name": "{x}", "base": {}, "axes": {"y": {"a": {}}}})


def test_cli_lists_a_selection_as_json(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("RFTBENCH_DATA", str(tmp_path / "no-data"))  # nothing runnable: the listing exits 1
    assert main(["sweep", str(BENCH / "paper_grid.yaml"), "--list", "--json", "--only", "resnet50-cub200-*",
                 "--set", "train.epochs=2"]) == 1
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 8 and {r["model"] for r in rows} == {PAPER_BACKBONES["resnet50"]}


def test_a_toy_grid_trains_on_registry_datasets_and_logs_to_mlflow(workdir, monkeypatch):
    from rftbench.tracking.store import client_for

    F.make_cifar(workdir / "data").apply(monkeypatch)
    F.make_imagefolder(workdir / "folder", per_class=6)
    spec = {
        "name": "{dataset}-{schedule}",
        "base": {"experiment": "grid-test", "model": {"name": "small_resnet", "pretrained": False},
                 "data": {"root": str(workdir / "data"), "batch_size": 8, "eval_batch_size": 16},
                 "threat": {"eps": "8/255"}, "attack": {"steps": 1}, "train": {"epochs": 1, "lr": 0.01},
                 "eval": {"num_points": 2, "sweep_steps": 1, "n_samples": 6, "autoattack": {"enabled": False}}},
        "axes": {"dataset": {"cifar": {"data.name": "cifar10"},
                             "uc": {"data.name": "imagefolder", "data.root": str(workdir / "folder")}},
                 "schedule": {"const": {"schedule.name": "constant"}}},
    }
    results = run_grid(expand_grid(spec))
    assert [r["name"] for r in results] == ["cifar-const", "uc-const"]
    client = client_for()
    for r in results:
        run = client.get_run(r["run_id"])
        assert run.info.status == "FINISHED" and run.data.tags["rftbench.grid.dataset"] in {"cifar", "uc"}
        assert run.data.params["name"] == r["name"] and 0.0 <= r["acc_clean"] <= 1.0
        local = client.download_artifacts(r["run_id"], "splits.json", str(workdir / r["name"]))
        info = json.load(open(local))
        assert info["normalised"] is False and len(info["test_indices_sha256"]) == 64


def test_digits_regimes_grid():
    runs = expand_grid(load_grid_spec(BENCH / "digits_regimes.yaml"), "digits_regimes.yaml")
    cfgs = [r.config for r in runs]
    assert len(runs) == 16 == len({r.name for r in runs})
    assert {c.model.regime.name for c in cfgs} == {"full", "linear_probe", "partial", "lp_ft"}
    assert {c.schedule.name for c in cfgs} == {"constant", "epsilon_scheduling"} and {c.seed for c in cfgs} == {0, 1}
