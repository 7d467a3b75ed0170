import re

import pytest

from rftbench.config import load_config, parse_config
from rftbench.errors import ConfigError


def test_fraction_strings_and_defaults():
    cfg = parse_config({"threat": {"eps": "4/255"}, "attack": {"steps": 10}})
    assert cfg.threat.eps == pytest.approx(4 / 255) and cfg.threat.norm == "Linf"
    assert cfg.attack.step_ratio == pytest.approx(0.25)
    assert cfg.eps_grid()[0] == 0.0 and cfg.eps_grid()[-1] == pytest.approx(4 / 255)


def test_unknown_key_is_named(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  epochz: 3\n")
    with pytest.raises(ConfigError, match=r"train\.epochz: unknown key"):
        load_config(p)


def test_bad_value_is_named():
    with pytest.raises(ConfigError, match=r"train\.epochs"):
        parse_config({"train": {"epochs": 0}})
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        parse_config([1, 2])


def test_overrides_and_missing_file(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("name: x\n")
    cfg = load_config(p, ["train.epochs=3", "schedule.name=constant"])
    assert cfg.train.epochs == 3 and cfg.schedule.name == "constant"
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_example_configs_in_benchmarks_validate():
    from pathlib import Path

    files = sorted(Path(__file__).resolve().parents[2].joinpath("benchmarks").glob("*.yaml"))
    assert files, "benchmarks/ must hold example configs"
    for f in files:
        load_config(f)


@pytest.mark.parametrize("old, value, new", [
    ("attack.target_eps", 0.1, "threat.eps"),
    ("attack.norm", "L2", "threat.norm"),
    ("train.trades_beta", 3.0, "train.objective.params.beta"),
    ("eval.pgd_steps", 20, "eval.sweep_steps"),
])
def test_old_keys_name_their_new_place(old, value, new):
    section, key = old.split(".")
    with pytest.raises(ConfigError, match=rf"{re.escape(old)}: moved to {re.escape(new)}"):
        parse_config({section: {key: value}})


def test_threat_is_read_by_the_eps_grid_and_objective_takes_name_and_params():
    cfg = parse_config({"threat": {"eps": "8/255", "norm": "L2"}, "eval": {"num_points": 3},
                        "train": {"objective": {"name": "trades", "params": {"beta": 2.5}}}})
    assert cfg.eps_grid() == pytest.approx([0, 4 / 255, 8 / 255])
    assert cfg.train.objective.name == "trades" and cfg.train.objective.params == {"beta": 2.5}
    assert parse_config({"train": {"objective": "mart"}}).train.objective.name == "mart"
    assert parse_config({}).train.objective.name == "pgd_at" and parse_config({}).eval.sweep_attack == "pgd"


@pytest.mark.parametrize("eps, message", [
    (8, r"threat\.eps=8 is outside \[0, 1\].*did you mean 8/255"),
    (1.5, r"threat\.eps=1\.5 is outside \[0, 1\]"),
    (float("inf"), "finite"),
    (float("nan"), "finite"),
    ("4/0", "divides by zero"),
    (-0.1, ">= 0"),
])
def test_bad_eps_values_are_refused_with_a_hint(eps, message):
    with pytest.raises(ConfigError, match=message):
        parse_config({"threat": {"eps": eps}})


def test_l2_radius_may_exceed_one_and_the_grid_must_be_in_range():
    assert parse_config({"threat": {"norm": "L2", "eps": 1.5}}).threat.eps == 1.5
    with pytest.raises(ConfigError, match="eval.eps_grid"):
        parse_config({"eval": {"eps_grid": [0, 0.1, float("nan")]}})
    with pytest.raises(ConfigError, match="eval.eps_grid"):
        parse_config({"eval": {"eps_grid": [0, 4]}})


def test_validate_names_checks_every_registry_before_any_work():
    from rftbench.errors import UnknownNameError
    from rftbench.experiments.validation import validate_names

    validate_names(parse_config({}))
    for section, key, bad in [("schedule", "name", "lineer"), ("train", "objective", "tradez"),
                              ("data", "name", "digitz"), ("eval", "sweep_attack", "apgd_ce"),
                              ("model", "name", "small_cnm")]:
        with pytest.raises(UnknownNameError, match="Did you mean"):
            validate_names(parse_config({section: {key: bad}}))
    with pytest.raises(ConfigError, match="objective 'trades'.*'gamma'"):
        validate_names(parse_config({"train": {"objective": {"name": "trades", "params": {"gamma": 1}}}}))


def test_empty_names_and_huge_seeds_are_refused():
    with pytest.raises(ConfigError, match="experiment"):
        parse_config({"experiment": ""})
    with pytest.raises(ConfigError, match="seed"):
        parse_config({"seed": 2**70})
