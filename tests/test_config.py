import pytest

from rftbench.config import load_config, parse_config
from rftbench.errors import ConfigError


def test_fraction_strings_and_defaults():
    cfg = parse_config({"attack": {"target_eps": "4/255", "steps": 10}})
    assert cfg.attack.target_eps == pytest.approx(4 / 255)
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

    files = sorted(Path(__file__).resolve().parents[1].joinpath("benchmarks").glob("*.yaml"))
    assert files, "benchmarks/ must hold example configs"
    for f in files:
        load_config(f)
