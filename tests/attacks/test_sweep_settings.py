"""Sweep-attack settings: the registry, names for the ER, what the record stores, and errors."""
import pytest

from rftbench.attacks import SWEEP_ATTACKS, SweepSettings
from rftbench.attacks.sweep import describe_sweep
from rftbench.errors import ConfigError, UnknownNameError


def test_registry_holds_pgd_and_apgd():
    assert {"pgd", "apgd-ce", "apgd-dlr"} <= set(SWEEP_ATTACKS.names())
    with pytest.raises(UnknownNameError, match="Did you mean 'apgd-ce'"):
        SweepSettings(attack="apgd_ce")


@pytest.mark.parametrize("settings,name", [
    (SweepSettings(), "PGD-10"),
    (SweepSettings("pgd", "L2", steps=20, random_start=True), "L2-PGD-20+rs"),
    (SweepSettings("pgd", steps=10, restarts=3), "PGD-10x3"),
    (SweepSettings("apgd-ce"), "APGD-CE-10"),
    (SweepSettings("apgd-ce", "L2", steps=100, restarts=2), "L2-APGD-CE-100x2"),
    (SweepSettings("apgd-dlr", steps=10), "APGD-DLR-10"),
])
def test_names_and_round_trip_through_the_record(settings, name):
    assert settings.describe() == name
    d = settings.to_dict()
    assert d["attack"] == settings.attack and d["library"] == "torchattacks"
    assert SweepSettings.from_dict(d) == settings and describe_sweep(d) == name


def test_defaults_are_written_out():
    pgd = SweepSettings("pgd", steps=10)
    assert pgd.step_ratio == 0.25 and pgd.random_start is False  # 2.5 / steps, as before
    apgd = SweepSettings("apgd-ce", steps=10)
    assert apgd.step_ratio is None and apgd.random_start is True  # APGD adapts its step, always starts at random
    d = apgd.to_dict()
    assert d["class"] == "APGD" and d["loss"] == "ce" and d["step_size_ratio"] is None
    assert SweepSettings("apgd-dlr").to_dict()["loss"] == "dlr"


def test_large_eps_variant():
    assert SweepSettings("pgd", steps=10, step_ratio=0.1).for_large_eps() == SweepSettings("pgd", steps=20,
                                                                                         step_ratio=0.125)
    assert SweepSettings("pgd", steps=50).for_large_eps().steps == 50
    big = SweepSettings("apgd-ce", steps=10, restarts=2).for_large_eps()
    assert big.attack == "apgd-ce" and big.steps == 20 and big.restarts == 2 and big.step_ratio is None


def test_bad_settings_fail_with_what_to_do():
    with pytest.raises(ConfigError, match="APGD-CE adapts its own"):
        SweepSettings("apgd-ce", step_ratio=0.25)
    with pytest.raises(ConfigError, match="APGD-DLR adapts its own"):
        SweepSettings("apgd-dlr", step_ratio=0.25)
    with pytest.raises(ConfigError, match="norm must be one of Linf, L2, L1"):
        SweepSettings(norm="L0")
    with pytest.raises(ConfigError, match="no L1 PGD"):  # L1 sweeps with pyautoattack's APGD only
        SweepSettings(norm="L1")
    with pytest.raises(ConfigError, match="steps >= 1"):
        SweepSettings(steps=0)


def test_a_worst_case_sweep_from_the_config():
    from conftest import tiny_config
    from rftbench.evaluation.evaluate import sweep_settings
    from rftbench.experiments.validation import validate_names

    cfg = tiny_config(eval__sweep_attack=["apgd-ce", "apgd-dlr"])
    s = sweep_settings(cfg)
    assert s.attack == ("apgd-ce", "apgd-dlr") and s.describe() == "worst(APGD-CE-3|APGD-DLR-3)"
    assert sweep_settings(tiny_config(eval__sweep_attack=["apgd-ce"])).attack == "apgd-ce"
    for bad in ([], ["pgd", "pgd"]):
        with pytest.raises(ConfigError, match="list of distinct names"):
            tiny_config(eval__sweep_attack=bad)
    with pytest.raises(UnknownNameError, match="Did you mean 'apgd-dlr'"):
        validate_names(tiny_config(eval__sweep_attack=["apgd-ce", "apgd_dlr"]))
    with pytest.raises(ConfigError, match="none of \\['apgd-ce', 'apgd-dlr'\\] takes it"):
        SweepSettings(("apgd-ce", "apgd-dlr"), step_ratio=0.2)
