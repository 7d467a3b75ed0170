"""eval.threats: parsed and checked before any work; absent, it changes nothing (dumps, run identity)."""
import hashlib

import pytest

from conftest import tiny_config
from rftbench.config import dump_config
from rftbench.errors import ConfigError
from rftbench.evaluation.threats import radius_warning, resolve_threats
from rftbench.experiments.gridrun import run_identity


def test_a_config_without_threats_dumps_and_hashes_as_before():
    """Values computed before eval.threats existed (commit 4b53ca7, after the regimes' new keys, which
    changed every config's dump: NOTES) for the same config: the field at its default is not in it."""
    cfg = tiny_config()
    assert "threats" not in cfg.model_dump()["eval"] and "eval.threats" not in cfg.flat()
    assert run_identity(cfg) == "4c7222934afaf941cb9760d4"
    assert hashlib.sha256(dump_config(cfg).encode()).hexdigest()[:16] == "767fe26d726215f7"


def test_threats_parse_fractions_and_round_trip():
    cfg = tiny_config(eval__threats=[{"norm": "L2", "eps": "1/2"}, {"corruptions": "all"},
                                     {"norm": "L1", "eps": 12, "sweep_steps": 5}])
    l2, corr, l1 = cfg.eval.threats
    assert l2.eps == 0.5 and l2.key() == "L2:0.5" and corr.severities == [3] and l1.sweep_steps == 5
    again = tiny_config(eval__threats=cfg.model_dump()["eval"]["threats"])
    assert again.eval.threats == cfg.eval.threats and run_identity(again) == run_identity(cfg) != run_identity(
        tiny_config())


@pytest.mark.parametrize("threats,message", [
    ([{"norm": "L2", "eps": 1.0}, {"norm": "L2", "eps": 1}], "lists L2:1 twice"),
    ([{"norm": "L3", "eps": 1.0}], "'Linf', 'L2' or 'L1'"),
    ([{"corruptions": ["fog"], "severities": [0, 3]}], "severities must be distinct integers in 1..5"),
    ([{"corruptions": ["fog"], "severities": [6]}], "1..5"),
    ([{"corruptions": []}], "`all` or a list of distinct names"),
    ([{"norm": "Linf", "eps": 4}], "did you mean 4/255"),
    ([{"norm": "L2", "eps": -1}], "greater than 0"),
])
def test_bad_threats_are_refused_with_what_to_do(threats, message):
    with pytest.raises(ConfigError, match=message):
        tiny_config(eval__threats=threats)


def test_an_l2_or_l1_radius_written_as_linf_warns_with_its_per_pixel_meaning():
    msg = radius_warning("L2", 4 / 255, (3, 224, 224))
    # 4/255 spread over sqrt(150528) = 388 values: 0.0103/255 per value
    assert "looks like a Linf radius" in msg and "0.0103/255 per value" in msg and "3x224x224" in msg
    assert radius_warning("L1", 4 / 255, (3, 224, 224)) is not None
    assert radius_warning("L2", 2.0, (3, 224, 224)) is None and radius_warning("L1", 75, (3, 224, 224)) is None
    assert radius_warning("L2", 0.05, (1, 16, 16)) is None  # 0.8/255 per value on 256 values: plausible
    cfg = tiny_config(eval__threats=[{"norm": "L2", "eps": "4/255"}])
    with pytest.warns(UserWarning, match="looks like a Linf radius"):
        _, notes = resolve_threats(cfg, (3, 224, 224), 64, False, {})
    assert len(notes) == 1


def test_threats_that_cannot_run_fail_before_any_work():
    cfg = tiny_config(eval__threats=[{"norm": "L1", "eps": 8, "sweep_attack": "pgd"}])
    with pytest.raises(ConfigError, match="no L1 PGD"):
        resolve_threats(cfg, (1, 16, 16), 64, False, {})
    cfg = tiny_config(eval__threats=[{"corruptions": ["fogg", "frost"]}])
    with pytest.raises(ConfigError, match="unknown corruption 'fogg' \\(did you mean 'fog'\\?\\).*gaussian_noise"):
        resolve_threats(cfg, (1, 16, 16), 64, False, {})
    cfg = tiny_config(eval__threats=[{"norm": "L2", "eps": 1.0, "autoattack": {"version": "custom"}}])
    with pytest.raises(ConfigError, match="needs eval.autoattack.attacks"):
        resolve_threats(cfg, (1, 16, 16), 64, True, {})
