import pytest

from rftbench.errors import ConfigError, UnknownNameError
from rftbench.scheduling import SCHEDULES, create_schedule, parse_schedule_spec


def test_builtins_are_discovered():
    assert {"none", "constant", "linear", "epsilon_scheduling"} <= set(SCHEDULES.names())


def test_epsilon_scheduling_matches_paper_formula():
    # the paper: T = 50 epochs, T1 = 12, T2 = 37 -> eps(t) = max(0, min(1, (t - 12) / 25)) * target
    s = create_schedule("epsilon_scheduling", {"start": 12 / 50, "end": 37 / 50})
    for t in range(50):
        expected = min(max((t - 12) / 25, 0.0), 1.0) * (4 / 255)
        assert s.eps_at(t, 50, 4 / 255) == pytest.approx(expected, abs=1e-12)


def test_constant_none_linear():
    assert create_schedule("constant").eps_at(0, 10, 0.3) == 0.3
    assert create_schedule("none").eps_at(9, 10, 0.3) == 0.0
    lin = create_schedule("linear", {"warmup": 0.5})
    assert lin.eps_at(0, 100, 0.2) == 0.0
    assert lin.eps_at(25, 100, 0.2) == pytest.approx(0.1)
    assert lin.eps_at(60, 100, 0.2) == pytest.approx(0.2)


def test_out_of_range_and_unknown_parameters():
    with pytest.raises(ConfigError, match=r"'start'=1.5 is out of bounds \[0.0, 1.0\]"):
        create_schedule("epsilon_scheduling", {"start": 1.5})
    with pytest.raises(ConfigError, match="must not exceed"):
        create_schedule("epsilon_scheduling", {"start": 0.8, "end": 0.2})
    with pytest.raises(ConfigError, match="no parameter"):
        create_schedule("constant", {"warmup": 0.1})
    with pytest.raises(UnknownNameError, match="Did you mean 'linear'"):
        create_schedule("lineer")


def test_spec_parsing():
    assert parse_schedule_spec("linear:warmup=0.3") == ("linear", {"warmup": 0.3})
    with pytest.raises(ConfigError):
        parse_schedule_spec("linear:warmup")
